"""Settings of the billing service, read from the environment at start."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, ClassVar

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from sen_shared.config import Settings, load_settings

if TYPE_CHECKING:
    from .domain.invoices import Bank


RECEIPT_PREFIX = re.compile(r"[A-Z0-9-]{1,12}")


class FacilityBank(BaseModel):
    """A facility's own receiving account: its invoices' VietQR codes pay into it."""

    model_config = ConfigDict(extra="forbid")
    bin: str = Field(pattern=r"^\d{6}$", description="the NAPAS BIN (6 digits) of the facility's bank")
    account: str = Field(pattern=r"^[0-9A-Za-z]{1,19}$", description="its account number")
    name: str = Field("", description="the account holder's name, shown beside the QR")


class BillingSettings(Settings):
    service: str = "billing"
    secret_fields: ClassVar[tuple[str, ...]] = ("payos_checksum_key", "casso_checksum_key", "sepay_api_key",
                                                "webhook_secret")
    # payment webhooks (domain/webhooks.py): secrets from the environment only; empty = provider off (503)
    payos_checksum_key: str = Field("", validation_alias="SEN_PAYOS_CHECKSUM_KEY",
                                    description="payOS checksum key (HMAC-SHA256 of webhook data)")
    casso_checksum_key: str = Field("", validation_alias="SEN_CASSO_CHECKSUM_KEY",
                                    description="Casso v2 webhook checksum key (HMAC-SHA512)")
    sepay_api_key: str = Field("", validation_alias="SEN_SEPAY_API_KEY",
                               description="the API key SePay sends as 'Authorization: Apikey <key>'")
    webhook_secret: str = Field("", validation_alias="SEN_WEBHOOK_SECRET",
                                description="Standard Webhooks secret, 'whsec_' + base64")
    webhook_max_bytes: int = Field(65536, validation_alias="SEN_WEBHOOK_MAX_BYTES", gt=0, le=1_000_000,
                                   description="largest webhook body accepted, bytes")
    # charges, invoices, VietQR (domain/pricing.py, bhyt.py, invoices.py, vietqr.py)
    bank_bin: str = Field("", validation_alias="SEN_BANK_BIN", pattern=r"^(\d{6})?$",
                          description="the NAPAS BIN (6 digits) of the bank receiving transfers; empty = no QR (503)")
    bank_account: str = Field("", validation_alias="SEN_BANK_ACCOUNT", pattern=r"^[0-9A-Za-z]{0,19}$",
                              description="the receiving account number (at most 19 letters or digits)")
    bank_account_name: str = Field("", validation_alias="SEN_BANK_ACCOUNT_NAME",
                                   description="the account holder's name, shown beside the QR")
    account_facilities: dict[str, str] = Field(
        default_factory=dict, validation_alias="SEN_BANK_ACCOUNT_FACILITIES",
        description='JSON {"<receiving account number>": "<Organization id>"}: whose unmatched queue a '
                    "transfer to that account joins (an account not listed: the admins' queue)")
    facility_banks: dict[str, FacilityBank] = Field(
        default_factory=dict, validation_alias="SEN_FACILITY_BANK_ACCOUNTS",
        description='JSON {"<Organization id>": {"bin", "account", "name"}}: a facility\'s own receiving account, '
                    "its invoices' VietQR codes pay into (not listed: SEN_BANK_BIN/SEN_BANK_ACCOUNT's); each "
                    "account joins SEN_BANK_ACCOUNT_FACILITIES as its facility's unless that names it")
    qr_ttl_seconds: int = Field(900, validation_alias="SEN_QR_TTL_SECONDS", gt=0, le=7 * 86400,
                                description="how long a VietQR payload is served before a new one is issued")
    base_salary: int = Field(2_340_000, validation_alias="SEN_BASE_SALARY", gt=0,
                             description="the base salary in đồng (BHYT: a visit under 15 % of it is covered 100 %)")
    facility_levels: dict[str, str] = Field(
        default_factory=dict, validation_alias="SEN_FACILITY_LEVELS",
        description='JSON {"<Organization id>": "central|province|district|commune"}: the price list\'s level')
    default_facility_level: str = Field("district", validation_alias="SEN_DEFAULT_FACILITY_LEVEL",
                                        pattern="^(central|province|district|commune)$",
                                        description="the level of a facility not in SEN_FACILITY_LEVELS")
    facility_names: dict[str, str] = Field(
        default_factory=dict, validation_alias="SEN_FACILITY_NAMES",
        description='JSON {"<Organization id>": "<its name>"}: the name a receipt prints (not listed: the id)')
    facility_districts: dict[str, str] = Field(
        default_factory=dict, validation_alias="SEN_FACILITY_DISTRICTS",
        description='JSON {"<Organization id>": "<its district>"}: the district a cashier\'s invoice carries '
                    "(the dashboard's district filter; a consult's invoice takes its event's)")
    receipt_prefixes: dict[str, str] = Field(
        default_factory=dict, validation_alias="SEN_FACILITY_RECEIPT_PREFIXES",
        description='JSON {"<Organization id>": "<code>"}: what its receipt numbers start with, 1 to 12 upper-case '
                    "letters, digits or dashes (not listed: its id, upper case, cut to 12 characters); no two "
                    "facilities' may agree")
    price_list_file: str = Field("", validation_alias="SEN_PRICE_LIST_FILE",
                                 description="the price list loaded at start (default: the one shipped)")

    @field_validator("webhook_secret")
    @classmethod
    def _whsec(cls, value: str) -> str:
        if value:
            from .domain.webhooks import standard_signature

            standard_signature("check", "0", b"", value)  # 'whsec_' + base64, or a ValueError saying so
        return value

    @field_validator("receipt_prefixes")
    @classmethod
    def _prefix_codes(cls, value: dict[str, str]) -> dict[str, str]:
        for facility, code in value.items():
            if not RECEIPT_PREFIX.fullmatch(code):
                raise ValueError(f"{facility}: {code!r} is no receipt prefix: 1 to 12 upper-case letters, digits or "
                                 "dashes")
        return value

    @model_validator(mode="after")
    def _receipts_told_apart(self) -> BillingSettings:
        # two facilities printing the same receipt numbers: their series are apart, their paper is not
        from .domain.receipts import clash_message, prefix_clashes

        known = {*self.facility_names, *self.facility_levels, *self.facility_districts, *self.facility_banks,
                 *self.receipt_prefixes}
        clashes = prefix_clashes(known, self.receipt_prefixes)
        if clashes:
            raise ValueError("SEN_FACILITY_RECEIPT_PREFIXES: " + "; ".join(
                clash_message(group, self.receipt_prefixes) for group in clashes))
        return self

    @model_validator(mode="after")
    def _own_accounts_owned(self) -> BillingSettings:
        # a transfer to a facility's own account that matches no invoice waits in that facility's queue
        for facility, bank in self.facility_banks.items():
            self.account_facilities.setdefault(bank.account, facility)
        return self

    def bank_of(self, facility: str | None) -> Bank | None:
        """The account a facility's invoices are paid into: its own, else the province's, else none."""
        from .domain.invoices import Bank

        own = self.facility_banks.get(facility or "")
        if own is not None:
            return Bank(own.bin, own.account, own.name)
        if self.bank_bin and self.bank_account:
            return Bank(self.bank_bin, self.bank_account, self.bank_account_name)
        return None

    def name_of(self, facility: str | None) -> str:
        return self.facility_names.get(facility or "") or (facility or "")

    def district_of(self, facility: str | None) -> str | None:
        return self.facility_districts.get(facility or "") or None

    def level_of(self, facility: str | None) -> str:
        return self.facility_levels.get(facility or "", self.default_facility_level)


def settings_from_env() -> BillingSettings:
    return load_settings(BillingSettings)
