"""The billing FHIR server: the shared engine (``sen_shared.fhir.rest``) with billing's rules in front.

Billing holds no clinical record, so its policy is by role and facility, not by patient
(the EHR's patient-reach policy in ``sen_shared.fhir.access`` has nothing to reach here):

- ``admin``: everything below, every facility; the only role that writes the price list
  (ChargeItemDefinition: create, update, patch, delete; each change a new version in the
  store's history) and Accounts.
- ``health-dept``: reads everything.
- ``cashier``: reads and searches ChargeItem, Account, Invoice and PaymentReconciliation of
  their OWN facility only (``performingOrganization``, ``owner``, ``issuer``, ``requestor``);
  another facility's is answered as one not stored (the 404 of a made-up id, byte for byte, a deleted
  one's too) on read, vread, history and the Invoice operations, its refusal recorded as an AuditEvent
  (403 and why) in billing's own trail, and is absent from searches. Adds charges by hand (ChargeItem
  create, for their facility; the price comes from the price list, never from the body) and
  makes invoices of them (Invoice create, then ``$issue``; ``$cancel``). Records a patient's
  BHYT card as a Coverage (create, update; every facility's cashiers see Coverage: the card
  belongs to the patient, not the facility).
- everyone signed in: reads the price list.
- ``AuditEvent``: billing's own audit trail (the refusals answered as missing ids, below), served read-only
  (read, vread, history, search by date, agent, altid, entity, outcome, ...: the engine's, as the EHR and
  teleconsult serve theirs) to whom the EHR lets read its trail (``sen_shared.fhir.access``: admin and
  health-dept; a cashier is 403); never created, updated, patched or deleted over the API (405, whoever asks,
  as on every Sen server: the engine's ``capability.SERVER_WRITTEN``): the server writes it.

Invoices change only through their operations (``$issue``, ``$cancel``; ``balanced`` comes
from payments): a plain update, patch or delete of an Invoice is 405, as is any write of a
PaymentReconciliation (the settlement writes it). A ChargeItem on an invoice is not changed
by hand (405 for update/patch/delete; admin may delete one no live invoice holds: never invoiced,
or given back by its invoice's cancel). Batch and
transaction Bundles are not taken: ``POST /fhir`` is a 404 OperationOutcome saying so (nothing is served at
billing's ``[base]``, ``served_methods``): every billing write goes through these checks.

Billing's own search parameter ``invoiced`` (``true``/``false``) on ChargeItem, for one patient's
charges (``subject`` or ``patient`` is required with it): ``ChargeItem?subject=Patient/x&invoiced=false``
is what the portal's new-invoice page lists as "not yet invoiced". It reads the invoices' claims
(``charge_invoiced``, a chain per ChargeItem, ``domain/charge_claims.py``: taken by ``inv.create_draft``,
exactly what an Invoice create refuses to take twice), so nothing is written for it: the ChargeItem's
``status`` stays ``billable`` (a status written on invoicing would be a second writer of the ChargeItem).
A cancelled invoice gives its charges back (``inv.cancel`` releases their claims): they are
``invoiced=false`` again and can go on a new invoice, while the cancelled Invoice keeps its lines.
An Invoice create for the same charges as a cancelled invoice makes a new one (its id derives from
the cancelled one's, ``inv.next_invoice_id``), not the cancelled one again.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any, NoReturn
from urllib.parse import urlencode

from sen_shared.auth import current_principal
from sen_shared.fhir import access
from sen_shared.fhir import store as st
from sen_shared.fhir.audit import AUDIT_TYPE, Auditor, Record
from sen_shared.fhir.body import unpack
from sen_shared.fhir.capability import READ_ONLY_INTERACTIONS
from sen_shared.fhir.guarded import Hidden, hidden_refusals
from sen_shared.fhir.http import FhirRequest, FhirResponse, version_headers, write_answer
from sen_shared.fhir.names import DISPLAY_MAX, one_line
from sen_shared.fhir.outcome import FhirError
from sen_shared.fhir.rest import FhirServer
from sen_shared.fhir.search import parse_search
from sen_shared.fhir.search.executor import resolve_ids

from .domain import charge_claims, pricing
from .domain import invoices as inv

RESOURCE_TYPES: tuple[str, ...] = ("ChargeItemDefinition", "ChargeItem", "Account", "Invoice",
                                   "PaymentReconciliation", "Coverage", AUDIT_TYPE)
# the element and index field naming each facility-scoped resource's facility
FACILITY_FIELD = {"Invoice": ("issuer", "sp_issuer"),
                  "ChargeItem": ("performingOrganization", "sp_performing-organization"),
                  "Account": ("owner", "sp_owner"),
                  "PaymentReconciliation": ("requestor", "sp_requestor")}
READERS = frozenset({"admin", "health-dept", "cashier"})
# what the CapabilityStatement lists (FhirConfig.interactions): an Invoice is created, then changes through
# $issue and $cancel; a PaymentReconciliation is written by the settlement only (_write_check); the audit
# trail is read-only on every Sen server (the engine's capability.SERVER_WRITTEN)
INTERACTIONS: dict[str, tuple[str, ...]] = {"Invoice": (*READ_ONLY_INTERACTIONS, "create"),
                                            "PaymentReconciliation": READ_ONLY_INTERACTIONS}
INVOICED = "invoiced"  # billing's own ChargeItem search parameter (module docstring)


def forbidden(detail: str) -> FhirError:
    return FhirError(f"forbidden: {detail}", status=403, code="forbidden")


def _not_allowed(detail: str, allow: str | None = None) -> FhirError:
    """A 405; ``allow``: the methods left to this caller when narrower than the target's (the error
    handler names the target's otherwise, ``sen_shared.allow``)."""
    return FhirError(detail, status=405, code="not-supported", headers={"Allow": allow} if allow is not None else None)


class BillingFhirServer(FhirServer):
    """:class:`FhirServer` for billing; ``settings`` gives the base salary for new invoices."""

    def __init__(self, config: Any, db: Any, settings: Any) -> None:
        super().__init__(config, db)
        self.settings = settings
        # billing holds no clinical data: its reads are not written to an AuditEvent trail (the EHR's are); a
        # refusal answered as a missing id is (hide), in billing's own AuditEvent collection, one insert each
        self.auditor = Auditor(lambda: self.db, config.service)

    # ------------------------------------------------------------------ who

    @staticmethod
    def principal() -> Any:
        return current_principal()

    @staticmethod
    def facility_of(principal: Any) -> str | None:
        """``Organization/<facility>`` a caller is limited to (a cashier), None for the unrestricted."""
        roles = principal.roles
        if roles & {"admin", "health-dept"}:
            return None
        if "cashier" in roles:
            if not principal.facility:
                raise forbidden("a cashier's token names no facility")
            return f"Organization/{principal.facility}"
        return None

    def _refuse(self, p: Any, rec: Record, err: FhirError) -> NoReturn:
        """Raise ``err``, a 403 by role, recorded as ``rec`` in billing's trail once (``hidden_refusals``)."""
        with hidden_refusals(self.auditor, p, rec):
            raise err

    def _read_check(self, rtype: str, interaction: str = "read", rid: str | None = None) -> Any:
        p = self.principal()
        if rtype == "ChargeItemDefinition":
            return p
        if rtype == AUDIT_TYPE:  # the EHR's rule for its trail, not a copy of it
            try:
                access.check(p, interaction, AUDIT_TYPE, compartment=False)
            except access.Denied as err:
                self._refuse(p, Record(interaction, rtype, rid), forbidden(str(err)))
            return p
        if not p.roles & READERS:
            self._refuse(p, Record(interaction, rtype, rid),
                         forbidden(f"{rtype} is read by cashiers, the health department and admins only"))
        return p

    def _check_head(self, p: Any, rec: Record, missing: Callable[[], Exception]) -> None:
        """A cashier reads their own facility's ``rec.resource_type/rec.rid`` only: another facility's is
        answered as ``missing()`` (what the engine answers for an id not stored), its AuditEvent the 403."""
        rtype, rid = rec.resource_type or "", rec.rid
        mine = self.facility_of(p)
        if mine is None or rtype not in FACILITY_FIELD or rid is None:
            return
        head = self.store().head(rtype, rid)
        if head is None:
            return  # the engine answers 404
        if mine not in self._facilities(rtype, rid, head):
            self.hide(p, rec, f"this {rtype} belongs to another facility", missing())

    def _facilities(self, rtype: str, rid: str, head: dict[str, Any]) -> list[str]:
        """The facility references of a stored resource: its index field; a deleted one's (a tombstone keeps
        none, and its history holds every version's body), its last version's element."""
        element, field = FACILITY_FIELD[rtype]
        if not head.get("del"):
            return [str(v) for v in head.get(field) or ()]
        last = unpack(self.store().history(rtype).find_one({"_id": f"{rid}/{int(head['v']) - 1}"}, {"res": 1}))
        ref = ((last or {}).get("res") or {}).get(element) or {}
        return [ref["reference"]] if isinstance(ref, dict) and isinstance(ref.get("reference"), str) else []

    def hide(self, p: Any, rec: Record, reason: str, answer: Exception) -> NoReturn:
        """Refuse ``rec`` as an id not stored would be answered (``answer``), recording the 403 it is."""
        with hidden_refusals(self.auditor, p, rec):
            raise Hidden(reason, answer)

    def _write_check(self, req: FhirRequest, verb: str) -> Any:
        rtype = self.check_type(req.resource_type)
        p = self.principal()
        if rtype == "PaymentReconciliation":
            raise _not_allowed("PaymentReconciliation is written by the settlement of a paid invoice, not by hand")
        if rtype == "Invoice" and verb != "create":
            raise _not_allowed("an Invoice changes through its operations: Invoice/{id}/$issue and $cancel "
                               "(balanced when paid)")
        self.check_writable(rtype, verb)  # the engine's, whoever asks: the audit trail is the server's (405)
        if "admin" in p.roles:
            return p
        if rtype == "ChargeItemDefinition":
            self._refuse(p, Record(verb, rtype, req.rid), forbidden("the price list is changed by admins only"))
        if "cashier" not in p.roles or rtype == "Account":
            self._refuse(p, Record(verb, rtype, req.rid), forbidden(f"{verb} of {rtype} is not allowed for this role"))
        if rtype == "ChargeItem" and verb != "create":
            raise _not_allowed("a ChargeItem is not changed by hand once entered; ask an admin", "GET, HEAD")
        return p

    # ------------------------------------------------------------------ reads

    def read(self, req: FhirRequest, doc: dict[str, Any] | None = None) -> FhirResponse:
        rtype = self.check_type(req.resource_type)
        p = self._read_check(rtype, "read", req.rid)
        self._check_head(p, Record("read", rtype, req.rid), lambda: st.not_found(rtype, req.rid or ""))
        return super().read(req, doc)

    def vread(self, req: FhirRequest) -> FhirResponse:
        rtype = self.check_type(req.resource_type)
        p = self._read_check(rtype, "vread", req.rid)
        self._check_head(p, Record("vread", rtype, req.rid, req.vid),
                         lambda: st.no_version(rtype, req.rid or "", req.vid or ""))
        return super().vread(req)

    def history(self, req: FhirRequest) -> FhirResponse:
        p = self.principal()
        if req.resource_type is None or (req.rid is None and req.resource_type != "ChargeItemDefinition"):
            if self.facility_of(p) is not None or not p.roles & READERS:
                self._refuse(p, Record("history-type", req.resource_type),
                             forbidden("type and system history are for admins and the health department"))
        if req.resource_type is not None:
            rtype = self.check_type(req.resource_type)
            self._read_check(rtype, "history" if req.rid else "history-type", req.rid)
            self._check_head(p, Record("history", rtype, req.rid), lambda: st.not_found(rtype, req.rid or ""))
        return super().history(req)

    def search(self, req: FhirRequest, extra: list[tuple[str, str]] | None = None,
               self_path: str | None = None, extra_filter: dict[str, Any] | None = None) -> FhirResponse:
        rtype = self.check_type(req.resource_type)
        p = self._read_check(rtype, "search")
        if any(k.split(":", 1)[0] in ("_include", "_revinclude") for k, _ in req.params):  # :iterate too
            if self.facility_of(p) is not None:
                raise FhirError("_include and _revinclude are not served to cashiers", status=400)
        mine = self.facility_of(p)
        if mine is not None and rtype in FACILITY_FIELD:
            own = {FACILITY_FIELD[rtype][1]: mine}
            extra_filter = {"$and": [extra_filter, own]} if extra_filter else own
        if rtype == "ChargeItem" and req.param(INVOICED) is not None:
            value = req.param(INVOICED)
            req, flt = self._invoiced_filter(req)
            extra_filter = {"$and": [extra_filter, flt]} if extra_filter else flt
            answer = super().search(req, extra, self_path, extra_filter)
            for link in (answer.body or {}).get("link") or []:  # the pages' links keep the parameter
                link["url"] += ("&" if "?" in link["url"] else "?") + urlencode({INVOICED: value})
            return answer
        return super().search(req, extra, self_path, extra_filter)

    def _invoiced_filter(self, req: FhirRequest) -> tuple[FhirRequest, dict[str, Any]]:
        """``invoiced=true|false``: the request without it, and the filter on the ids of the
        patient's ChargeItems that an invoice has claimed (or has not)."""
        values = [v for k, v in req.params if k == INVOICED]
        if len(values) != 1 or values[0] not in ("true", "false"):
            raise FhirError("invoiced is true or false, given once", status=400, code="invalid",
                            expression=[INVOICED])
        whose = [(k, v) for k, v in req.params if k in ("subject", "patient")]
        if not whose:
            raise FhirError("invoiced is answered for one patient's charges: add subject=Patient/<id>",
                            status=400, code="invalid", expression=[INVOICED])
        ids = resolve_ids(self.db, "ChargeItem", parse_search("ChargeItem", whose))
        claimed = set(charge_claims.holders(self.db, ids))
        wanted = sorted(claimed) if values[0] == "true" else [i for i in ids if i not in claimed]
        rest = replace(req, params=[(k, v) for k, v in req.params if k != INVOICED])
        return rest, {"_id": {"$in": wanted}}

    def compartment_search(self, req: FhirRequest) -> FhirResponse:
        return super().compartment_search(req)  # goes through search()

    def everything(self, req: FhirRequest) -> FhirResponse:
        raise FhirError("Patient/$everything is served by the EHR", status=404, code="not-supported")

    def capabilities(self, req: FhirRequest) -> FhirResponse:
        """The engine's statement, saying what billing does differently: its own ChargeItem
        parameter ``invoiced``, and no batch or transaction Bundles (see :meth:`bundle`)."""
        answer = super().capabilities(req)
        rest = answer.body["rest"][0]
        rest["interaction"] = [i for i in rest["interaction"] if i["code"] not in ("batch", "transaction")]
        for entry in rest["resource"]:
            if entry["type"] == "ChargeItem":
                entry["searchParam"].append({"name": INVOICED, "type": "token", "documentation": (
                    "true or false: the charge is on an invoice that is not cancelled, or not (never "
                    "invoiced, or given back by a cancelled invoice); with subject or patient")})
        return answer

    def served_methods(self, template: str, path: str, methods: tuple[str, ...]) -> tuple[str, ...]:
        """The engine's, less POST [base]: no Bundles here (:meth:`bundle`)."""
        served = super().served_methods(template, path, methods)
        return tuple(m for m in served if m != "POST") if path.strip("/") == "" else served

    def bundle(self, req: FhirRequest) -> FhirResponse:
        raise _not_allowed("billing takes no batch or transaction Bundles; write each resource on its own")

    # ------------------------------------------------------------------ writes

    def create(self, req: FhirRequest) -> FhirResponse:
        p = self._write_check(req, "create")
        rtype = req.resource_type
        if rtype == "ChargeItemDefinition":
            pricing.check_definition(req.body)
            req.body = pricing.stamp_changer(req.body, p)
        elif rtype == "ChargeItem":
            return self._create_charge(req, p)
        elif rtype == "Invoice":
            return self._create_invoice(req, p)
        return super().create(req)

    def update(self, req: FhirRequest) -> FhirResponse:
        p = self._write_check(req, "update")
        if req.resource_type == "ChargeItemDefinition":
            pricing.check_definition(req.body)
            req.body = pricing.stamp_changer(req.body, p)
            if (same := self._unchanged_definition(req)) is not None:
                return same
        return super().update(req)

    def _unchanged_definition(self, req: FhirRequest) -> FhirResponse | None:
        """A price list entry saved as it stands (``pricing.unchanged``): 200 with the version in force and
        nothing written (no version, history entry or event), as FHIR servers may answer an update that
        changes nothing; None otherwise. ``If-Match`` naming another version goes on to the store's 412.

        Here and not in the shared engine: its update reads the head without the body
        (``store.HEAD_PROJECTION``), so comparing there would cost every service's every update a read of
        the body, and its callers (transactions, chains of domain writes, events) count on a version per
        update; a price entry's comparison also leaves out billing's author stamp. One read of the entry,
        on the admin's rare price save."""
        rid = req.rid
        if not rid or not isinstance(req.body, dict) or req.body.get("id") != rid:
            return None  # the engine's answer (400) for a missing or different id
        doc = self.store().read_head("ChargeItemDefinition", rid)
        if doc is None or doc.get("del") or doc.get("res") is None:
            return None
        version = int(doc["v"])
        if_match = st.parse_etag(req.header("if-match"))
        if (if_match is not None and if_match != version) or not pricing.unchanged(doc["res"], req.body):
            return None
        headers = version_headers(req.base, "ChargeItemDefinition", rid, version, st.iso(doc["lu"]))
        return write_answer(req, 200, doc["res"], headers,
                            f"ChargeItemDefinition/{rid} unchanged: no new version (version {version} stands)")

    def conditional_update(self, req: FhirRequest) -> FhirResponse:
        p = self._write_check(req, "update")
        if req.resource_type == "ChargeItemDefinition":
            pricing.check_definition(req.body)
            req.body = pricing.stamp_changer(req.body, p)
        return super().conditional_update(req)

    def patch(self, req: FhirRequest) -> FhirResponse:
        self._write_check(req, "patch")
        return super().patch(req)

    def patched(self, req: FhirRequest, resource: dict[str, Any]) -> dict[str, Any]:
        if req.resource_type == "ChargeItemDefinition":
            pricing.check_definition(resource)
            # the new version names its author, not the one the patched version named
            return pricing.stamp_changer(resource, self.principal())
        return resource

    def delete(self, req: FhirRequest) -> FhirResponse:
        self._write_check(req, "delete")
        if req.resource_type == "ChargeItem" and req.rid and charge_claims.holder(self.db, req.rid) is not None:
            raise FhirError("this ChargeItem is on an invoice; cancel the invoice instead", status=409,
                            code="conflict")
        return super().delete(req)

    # ------------------------------------------------------------------ charges and invoices by hand

    def _facility_for_write(self, p: Any, given: Any, where: str) -> str:
        """The facility a write is for: the cashier's own (a different one is 403); admin names it."""
        ref = given.get("reference") if isinstance(given, dict) else None
        mine = self.facility_of(p)
        if mine is not None:
            if ref is not None and ref != mine:
                raise forbidden(f"{where} must be your own facility ({mine})")
            ref = mine
        if not isinstance(ref, str) or not ref.startswith("Organization/") or len(ref) <= 13:
            raise FhirError(f"{where} must name the facility (Organization/<id>)", status=422, expression=[where])
        return ref.split("/", 1)[1]

    def _create_charge(self, req: FhirRequest, p: Any) -> FhirResponse:
        body = self.body_resource(req)
        facility = self._facility_for_write(p, body.get("performingOrganization"),
                                            "ChargeItem.performingOrganization")
        patient = (body.get("subject") or {}).get("reference")
        if not isinstance(patient, str) or not patient.startswith("Patient/"):
            raise FhirError("ChargeItem.subject must be the patient (Patient/<id>)", status=422,
                            expression=["ChargeItem.subject"])
        if body.get("priceOverride") is not None and "admin" not in p.roles:
            raise FhirError("the price comes from the price list; only an admin may override it", status=422,
                            expression=["ChargeItem.priceOverride"])
        canon = body.get("definitionCanonical") or []
        if len(canon) != 1 or not isinstance(canon[0], str):
            raise FhirError("ChargeItem.definitionCanonical must name one price list entry "
                            "(its url or ChargeItemDefinition/<id>)", status=422,
                            expression=["ChargeItem.definitionCanonical"])
        definition = pricing.definition(self.db, canon[0])
        qty = (body.get("quantity") or {}).get("value", 1)
        if isinstance(qty, bool) or not isinstance(qty, int | float) or qty != int(qty) or not 1 <= qty <= 1000:
            raise FhirError("ChargeItem.quantity.value must be a whole number from 1 to 1000", status=422,
                            expression=["ChargeItem.quantity"])
        account = inv.account_for(self.db, patient, facility)
        item = inv.charge_item(patient=patient, facility=facility, definition=definition, quantity=int(qty),
                               account=account, enterer=f"Practitioner/{p.practitioner}" if p.practitioner else None,
                               note=((body.get("note") or [{}])[0] or {}).get("text"))
        if body.get("priceOverride") is not None:
            item["priceOverride"] = inv.money(int(body["priceOverride"]["value"]))
        w = self.store().create(item)
        return self._answer(req, w, 201)

    def _create_invoice(self, req: FhirRequest, p: Any) -> FhirResponse:
        """A draft Invoice of the patient's charges named in ``lineItem[].chargeItemReference``;
        every amount is computed here (the body's are ignored). Of the rest of the body only
        ``subject.display`` is kept: the patient's name the receipt prints (one line, at most
        ``DISPLAY_MAX`` characters: a longer one is 422), as the cashier's page read it from the EHR."""
        body = self.body_resource(req)
        facility = self._facility_for_write(p, body.get("issuer"), "Invoice.issuer")
        patient = (body.get("subject") or {}).get("reference")
        if not isinstance(patient, str) or not patient.startswith("Patient/"):
            raise FhirError("Invoice.subject must be the patient (Patient/<id>)", status=422,
                            expression=["Invoice.subject"])
        display = body["subject"].get("display")
        if isinstance(display, str) and len(" ".join(display.split())) > DISPLAY_MAX:
            raise FhirError(f"Invoice.subject.display is the patient's name: at most {DISPLAY_MAX} characters",
                            status=422, expression=["Invoice.subject.display"])
        ids = []
        for i, line in enumerate(body.get("lineItem") or []):
            ref = (line.get("chargeItemReference") or {}).get("reference", "")
            if not ref.startswith("ChargeItem/"):
                raise FhirError("each line names a ChargeItem (chargeItemReference)", status=422,
                                expression=[f"Invoice.lineItem[{i}].chargeItemReference"])
            ids.append(ref.split("/", 1)[1])
        if not ids or len(set(ids)) != len(ids):
            raise FhirError("an invoice names one or more distinct ChargeItems", status=422,
                            expression=["Invoice.lineItem"])
        items = []
        for cid in ids:
            def missing(cid: str = cid) -> FhirError:
                return FhirError(f"ChargeItem/{cid} does not exist", status=422, expression=["Invoice.lineItem"])
            try:
                item = self.store().read_doc("ChargeItem", cid)["res"]
            except FhirError:
                raise missing() from None
            if (item.get("performingOrganization") or {}).get("reference") != f"Organization/{facility}":
                if self.facility_of(p) is None:  # an admin sees every facility's charges
                    raise forbidden(f"ChargeItem/{cid} belongs to another facility")
                # a cashier: as a charge not stored, its AuditEvent the 403
                self.hide(p, Record("create", "Invoice", patients=[patient]),
                          f"ChargeItem/{cid} belongs to another facility", missing())
            if (item.get("subject") or {}).get("reference") != patient:
                raise FhirError(f"ChargeItem/{cid} is another patient's", status=422, expression=["Invoice.lineItem"])
            items.append(item)
        # the id derives from the charges: a retry (a lost answer, a crash after the charges'
        # claims) finds the same invoice instead of leaving its charges claimed by nothing
        # (after a cancelled invoice of the same charges: the next id, so they are invoiced anew)
        rid = inv.next_invoice_id(self.db, inv.derived_id("inv", patient, facility, *sorted(ids)))
        existed = self.store().head("Invoice", rid) is not None
        res = inv.create_draft(self.db, rid, patient=patient, facility=facility, items=items,
                               base_salary=self.settings.base_salary, patient_display=one_line(display),
                               district=self.settings.district_of(facility))  # the dashboard's filter
        doc = self.store().read_doc("Invoice", rid)
        from sen_shared.fhir.http import version_headers, write_answer
        from sen_shared.fhir.store_time import iso

        headers = version_headers(req.base, "Invoice", rid, int(doc["v"]), iso(doc["lu"]), location=True)
        return write_answer(req, 200 if existed else 201, doc["res"] if existed else res, headers,
                            f"Invoice/{rid} {'exists' if existed else 'created (draft)'}")

    def invoice_for(self, rid: str, operation: str) -> dict[str, Any]:
        """The Invoice ``rid`` if the caller may act on it (cashier: own facility; admin). Another
        facility's is answered as an Invoice not stored (404), its AuditEvent the 403; a role that
        handles no invoice is 403 whatever the id."""
        p = self.principal()
        # every refusal is recorded as the 403 it is (hidden_refusals), a role's too
        with hidden_refusals(self.auditor, p, Record("operation", "Invoice", rid, operation=operation)):
            if not p.roles & {"admin", "cashier"}:
                raise forbidden("invoices are handled by cashiers and admins")
            # one read: the facility is checked on the document read (its issuer, which the index key
            # sp_issuer is extracted from), not on a head read before it
            res = self.store().read_doc("Invoice", rid)["res"]
            mine = self.facility_of(p)
            if mine is not None and (res.get("issuer") or {}).get("reference") != mine:
                raise Hidden("this Invoice belongs to another facility", st.not_found("Invoice", rid))
        return res


__all__ = ["FACILITY_FIELD", "RESOURCE_TYPES", "BillingFhirServer"]
