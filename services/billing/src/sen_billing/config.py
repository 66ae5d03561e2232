"""Settings of the billing service, read from the environment at start."""

from __future__ import annotations

from pydantic import Field
from sen_shared.config import Settings, load_settings


class BillingSettings(Settings):
    service: str = "billing"
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


def settings_from_env() -> BillingSettings:
    return load_settings(BillingSettings)
