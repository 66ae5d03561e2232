"""``GuardedFhirServer``: the FHIR engine with the access policy in front and the audit trail behind.

Each interaction: gather the facts (which patients the resource belongs to,
before and after a write; their managing organizations; the caller's referral
grants), ask :mod:`.access` (403 ``forbidden`` saying what is missing), run
the engine's own method, then record an AuditEvent (:mod:`.audit`) whatever
the outcome, 403/404/410 included. On a server that hides refusals (``hide_refused``: the EHR, teleconsult), a
read, vread, instance history, ``$everything``, patch or delete of a resource the caller may not see
because of whose patient it is answers the 404 of a missing one (:meth:`GuardedFhirServer._check_stored`),
its AuditEvent the 403 (:class:`Hidden`; a service's own operations use it through
:func:`hidden_refusals`). Searches of restricted callers get a
MongoDB filter ANDed in by the executor (``extra_filter``) and their
``_include``/``_revinclude`` results are filtered the same way.

Bundles: batch entries and transaction reads go through the guarded methods
(each audited, stored with one ``insert_many`` per bundle); the writes of a
transaction are checked all before anything is applied and audited each.

The caller comes from ``principal`` (default: the bearer token of the current
connexion request).
"""

from __future__ import annotations

import contextlib
import copy
import functools
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, datetime
from typing import Any

from pymongo.database import Database

from . import access
from . import store as st
from .audit import AUDIT_TYPE, Auditor, Record
from .body import unpack
from .capability import SERVER_WRITTEN
from .http import FhirRequest, FhirResponse, parse_query
from .outcome import FhirError
from .rest import FhirConfig, FhirServer, compartment_param
from .search.definitions import get_param
from .search.extract import extract_param
from .validate import check_id

WRITE_METHODS = {"POST": "create", "PUT": "update", "DELETE": "delete", "PATCH": "patch"}
_WRITES = frozenset(WRITE_METHODS.values())


def _default_principal() -> Any:
    from ..auth import current_principal

    return current_principal()


@functools.lru_cache(maxsize=256)
def in_compartment(resource_type: str) -> bool:
    return resource_type == "Patient" or compartment_param(resource_type) is not None


def _patient_ref(value: str) -> str | None:
    if value.startswith("Patient/") and value.count("/") == 1:
        return value
    return None


def head_patients(resource_type: str, head: dict[str, Any] | None) -> list[str]:
    """``Patient/<id>`` references of a stored document, from its index fields."""
    if head is None or head.get("del"):
        return []
    if resource_type == "Patient":
        return [f"Patient/{head['_id']}"]
    param = compartment_param(resource_type)
    if param is None:
        return []
    return [r for v in head.get(f"sp_{param}") or () if (r := _patient_ref(str(v)))]


def resource_patients(resource: Any, *, raw: bool = False) -> list[str]:
    """``Patient/<id>`` references of a resource body (its Patient-compartment parameter).

    ``raw``: also return references that are not ``Patient/<id>`` (``urn:uuid:...``,
    conditional ``Patient?...``) so a transaction can resolve them.
    """
    if not isinstance(resource, dict):
        return []
    rtype = resource.get("resourceType")
    if not isinstance(rtype, str):
        return []
    if rtype == "Patient":
        rid = resource.get("id")
        return [f"Patient/{rid}"] if isinstance(rid, str) and rid else []
    param = compartment_param(rtype)
    if param is None:
        return []
    sp = get_param(rtype, param)
    if sp is None:
        return []
    try:
        fields = extract_param(sp, resource) or {}
    except Exception:  # noqa: BLE001 - an unreadable body is refused by validation later
        fields = {}
    refs = [r for v in fields.get(f"sp_{param}") or () if (r := _patient_ref(str(v)))]
    if raw:
        refs += _raw_references(resource)
    return list(dict.fromkeys(refs))


def _raw_references(node: Any) -> list[str]:
    out: list[str] = []
    if isinstance(node, dict):
        for k, v in node.items():
            if k == "reference" and isinstance(v, str) and (v.startswith("urn:") or v.startswith("Patient?")):
                out.append(v)
            elif isinstance(v, (dict, list)):
                out += _raw_references(v)
    elif isinstance(node, list):
        for item in node:
            out += _raw_references(item)
    return out


def body_owners(patient: dict[str, Any]) -> frozenset[str]:
    """managingOrganization and generalPractitioner references of a Patient body."""
    refs: set[str] = set()
    mo = patient.get("managingOrganization")
    if isinstance(mo, dict) and isinstance(mo.get("reference"), str):
        refs.add(mo["reference"])
    for gp in patient.get("generalPractitioner") or ():
        if isinstance(gp, dict) and isinstance(gp.get("reference"), str):
            refs.add(gp["reference"])
    return frozenset(refs)


class _Facts:
    """Facts about patients for one principal, loaded once per interaction."""

    def __init__(self, server: GuardedFhirServer, principal: Any) -> None:
        self.server = server
        self.principal = principal
        self.grantees = sorted(access.grantee_refs(principal))
        self.owner_refs = access.owner_refs(principal)
        self._cache: dict[str, access.PatientFacts] = {}
        self._accessible: set[str] | None = None

    def granted_to(self, ref: str) -> tuple[frozenset[str], dict[str, str]]:
        """The grantees of the principal's that ``ref`` is granted to, and those whose take-on of
        ``ref`` was ended (grantee -> when; a refusal says so)."""
        if not self.grantees:
            return frozenset(), {}
        grants = self.server.db[access.GRANTS]
        now = datetime.now(UTC)
        granted: set[str] = set()
        ended: dict[str, str] = {}
        for g in self.grantees:
            # insert-only documents (referral grants, take-on grants and their ends), found by their pair
            docs = list(grants.find({"pair": access.grant_id(ref, g)}))
            if access.active_grants(docs, now):
                granted.add(g)
            elif (when := access.ended_at(docs)) is not None:
                ended[g] = when
        return frozenset(granted), ended

    def _facts(self, ref: str, owners: frozenset[str]) -> access.PatientFacts:
        # a patient the principal owns needs no grant: the policy asks for grants only when the
        # owners do not reach (access.reaches), so the grant queries are skipped then
        if owners & self.owner_refs:
            return access.PatientFacts(ref, owners)
        granted, ended = self.granted_to(ref)
        return access.PatientFacts(ref, owners, granted, ended)

    def patient(self, ref: str, body: dict[str, Any] | None = None) -> access.PatientFacts:
        """Facts of ``ref``; ``body`` (a Patient being written) supplies the owners instead of the store."""
        if body is not None:
            return self._facts(ref, body_owners(body))
        hit = self._cache.get(ref)
        if hit is not None:
            return hit
        owners: frozenset[str] = frozenset()
        if self.server.is_restricted(self.principal):
            head = self.server.store().head("Patient", ref.split("/", 1)[1])
            if head is not None and not head.get("del"):
                owners = frozenset(str(v) for k in ("sp_organization", "sp_general-practitioner")
                                   for v in head.get(k) or () if "/" in str(v))
            facts = self._facts(ref, owners)
        else:
            facts = access.PatientFacts(ref)
        self._cache[ref] = facts
        return facts

    def stored_patient(self, ref: str, resource: dict[str, Any]) -> None:
        """``resource``, the stored Patient ``ref`` just read, gives its facts (no second lookup)."""
        if ref not in self._cache:
            self._cache[ref] = (self._facts(ref, body_owners(resource)) if self.server.is_restricted(self.principal)
                                else access.PatientFacts(ref))

    def many(self, refs: Iterable[str]) -> list[access.PatientFacts]:
        return [self.patient(r) for r in dict.fromkeys(refs)]

    def granted(self) -> frozenset[str]:
        """Patients granted to the principal (unexpired grants)."""
        out: set[str] = set()
        now = datetime.now(UTC)
        grants = self.server.db[access.GRANTS]
        for g in self.grantees:
            for doc in access.active_grants(grants.find({"grantee": g}), now):
                out.add(doc["patient"])
        return frozenset(out)

    def reach(self) -> access.Reach:
        return access.Reach(owner_refs=access.owner_refs(self.principal),
                            grantee_refs=frozenset(self.grantees), granted=self.granted())

    def accessible(self) -> set[str]:
        """Every ``Patient/<id>`` the principal reaches (owned through its facility/practitioner, or granted)."""
        if self._accessible is None:
            reach = self.reach()
            out = set(reach.granted)
            coll = self.server.store().current("Patient")
            for ref in sorted(reach.owner_refs):
                keys = ["sp_general-practitioner"] + (["sp_organization"] if ref.startswith("Organization/") else [])
                for key in keys:  # equality on a top-level field: pushed down by FerretDB
                    out.update(f"Patient/{d['_id']}" for d in coll.find({key: ref}, {"_id": 1}))
            self._accessible = out
        return self._accessible


_ABSENT: dict[str, Any] = {"del": True}  # a head already looked up and not found


class Hidden(access.Denied):
    """A refusal answered as what a missing id gets (``answer``: the 404 of a resource not stored, or the
    service's own answer to an id it does not hold), so that the caller does not learn that what it may
    not see exists (FHIR security.html#AccessDenied); its AuditEvent records the 403 it is. Raised where the
    caller's role may use the type or operation (a refusal of the role tells nothing about an id: 403)."""

    def __init__(self, reason: str, answer: Exception) -> None:
        super().__init__(reason)
        self.answer = answer


_RECORDED = "sen_audit_recorded"


def mark_recorded(err: Exception) -> Exception:
    """``err``, marked as an answer whose AuditEvent is stored already (a refusal recorded as the 403 it
    is): whatever audits the failures of the request around it leaves it out (:func:`already_recorded`),
    so that one refused request leaves one AuditEvent."""
    setattr(err, _RECORDED, True)
    return err


def already_recorded(err: BaseException) -> bool:
    """Was the AuditEvent of the request ``err`` answers stored already (:func:`mark_recorded`)?"""
    return bool(getattr(err, _RECORDED, False))


@contextlib.contextmanager
def hidden_refusals(auditor: Auditor, principal: Any, rec: Record) -> Iterator[Record]:
    """A :class:`Hidden` refusal raised in the block is recorded as ``rec`` (403 and why) and answered as
    its ``answer``, marked as recorded (:func:`mark_recorded`: the request's one AuditEvent); any other 403
    raised in it (a :class:`FhirError` or ``SenError`` with status 403: a role refused the operation) is
    recorded as ``rec`` too and raised as is, marked; an answer recorded already (an inner block's) is not
    recorded again; nothing is recorded otherwise. For the operations a service audits itself
    (teleconsult's workflow steps and scheduling, billing's invoice operations, receipts and payment
    endpoints); the engine's interactions record it in :meth:`GuardedFhirServer.audited`, with the rest of
    their AuditEvent."""
    try:
        yield rec
    except Hidden as err:
        rec.status, rec.detail = 403, str(err)
        auditor.record(principal, rec)
        raise mark_recorded(err.answer) from None
    except Exception as err:
        if getattr(err, "status", None) != 403 or already_recorded(err):
            raise
        rec.status, rec.detail = 403, str(getattr(err, "detail", None) or err)
        auditor.record(principal, rec)
        mark_recorded(err)
        raise


def _all_of(*filters: dict[str, Any] | None) -> dict[str, Any] | None:
    """The filters given (None for none) ANDed: one as itself, none as None."""
    given = [f for f in filters if f]
    return None if not given else given[0] if len(given) == 1 else {"$and": given}


class GuardedFhirServer(FhirServer):
    """A :class:`FhirServer` that enforces :mod:`.access` and records :mod:`.audit` AuditEvents."""

    def __init__(self, config: FhirConfig, db: Callable[[], Database], *,
                 principal: Callable[[], Any] | None = None, hide_refused: bool = False) -> None:
        super().__init__(config, db)
        self._principal = principal or _default_principal
        # a read (vread, instance history, $everything), patch or delete of a resource the caller may not see
        # because of whose it is answers the 404 of a missing one (:meth:`_check_stored`)
        self.hide_refused = hide_refused
        self.auditor = Auditor(lambda: self.db, config.service, background=True)

    # ------------------------------------------------------------------ plumbing

    def principal(self) -> Any:
        return self._principal()

    @staticmethod
    def is_restricted(principal: Any) -> bool:
        """True unless an admin: the others' access depends on the patient."""
        return "admin" not in principal.roles

    def _run(self, interaction: str, req: FhirRequest, pre: Callable[[Any, _Facts, Record], None],
             call: Callable[[], FhirResponse], post: Callable[[Any, _Facts, Record, FhirResponse], None] | None = None,
             *, rtype: str | None = None) -> FhirResponse:
        principal = self.principal()
        rtype = rtype if rtype is not None else req.resource_type
        if rtype in (AUDIT_TYPE, None):  # reading the trail (or everything): what was recorded is there
            self.auditor.flush()
        if rtype in SERVER_WRITTEN and interaction in _WRITES:  # 405 whoever asks, before whose it is
            self.check_writable(rtype, interaction)
        rec = Record(interaction, resource_type=rtype, rid=req.rid, vid=req.vid)
        facts = _Facts(self, principal)
        with self.audited(principal, rec):
            pre(principal, facts, rec)
            resp = call()
            if post is not None:
                post(principal, facts, rec, resp)
            rec.status = resp.status
        return resp

    @contextlib.contextmanager
    def audited(self, principal: Any, rec: Record) -> Iterator[Record]:
        """Record ``rec`` as an AuditEvent whatever happens in the block (a service's own operation,
        ``$take-on``, uses it too): its status and detail from the error raised (an
        :class:`access.Denied` becomes 403 ``forbidden``), else as the block set them; once only (an answer
        already recorded, :func:`already_recorded`, is not recorded again)."""
        stored = False
        try:
            yield rec
        except Hidden as err:
            rec.status, rec.detail = 403, str(err)
            raise err.answer from None
        except access.Denied as err:
            rec.status, rec.detail = 403, str(err)
            raise FhirError(f"forbidden: {err}", status=403, code="forbidden") from None
        except FhirError as err:
            if already_recorded(err):  # a refusal recorded where it was made (hidden_refusals)
                stored = True
                raise
            rec.status, rec.detail = err.status, err.detail
            raise
        except Exception as err:
            rec.status, rec.detail = 500, type(err).__name__
            raise
        finally:
            if not stored and rec.resource_type != AUDIT_TYPE:  # the audit trail is not re-audited
                self.auditor.record(principal, rec)

    def _check(self, principal: Any, interaction: str, rtype: str, patients: list[access.PatientFacts] | None,
               rec: Record) -> None:
        if patients:
            rec.patients += [p.ref for p in patients]
        access.check(principal, interaction, rtype, compartment=in_compartment(rtype), patients=patients)

    def _existing(self, principal: Any, facts: _Facts, rec: Record, interaction: str, rtype: str,
                  rid: str, head: dict[str, Any] | None = None, *, hide: bool = False) -> None:
        """Check ``interaction`` on the stored ``rtype/rid`` (type-level only when it does not exist).
        ``hide``: a refusal by whose it is answers as a missing one would (:meth:`_check_stored`)."""
        if head is None:
            head = self.store().head(rtype, rid)
        if head is _ABSENT:
            head = None
        if head is not None and head.get("del") and self.is_restricted(principal) and in_compartment(rtype):
            # deleted: whose it was is its last version's (its history holds every body: not anyone's to read)
            last = self._last_body(rtype, rid, head)
            if last is not None:
                patients = facts.many(resource_patients(last))
                if hide:
                    self._check_stored(principal, interaction, rtype, patients, rec, lambda: st.not_found(rtype, rid))
                else:
                    self._check(principal, interaction, rtype, patients, rec)
                return
        if head is None or head.get("del"):
            self._check(principal, interaction, rtype, None, rec)  # the engine answers 404/410
            if hide and head is None and interaction == "delete" and self._hides(principal, rtype):
                # never stored: as another facility's is answered (below), not the 204 of deleting nothing
                raise st.not_found(rtype, rid)
            return
        refs = head_patients(rtype, head)
        patients = facts.many(refs) if in_compartment(rtype) else None
        if hide:
            self._check_stored(principal, interaction, rtype, patients, rec, lambda: st.not_found(rtype, rid))
        else:
            self._check(principal, interaction, rtype, patients, rec)

    def _last_body(self, rtype: str, rid: str, tombstone: dict[str, Any]) -> dict[str, Any] | None:
        """The resource as it was before the deletion ``tombstone`` (a current document marked deleted), or None."""
        try:
            version = int(tombstone.get("v") or 0)
        except (TypeError, ValueError):
            return None
        if version < 2:
            return None
        doc = unpack(self.store().history(rtype).find_one({"_id": f"{rid}/{version - 1}"}, {"res": 1}))
        res = (doc or {}).get("res")
        return res if isinstance(res, dict) else None

    def _hides(self, principal: Any, rtype: str) -> bool:
        """Whether this server hides from ``principal`` the ``rtype`` resources it may not see: on a server
        that hides refusals, a caller whose reach depends on the patient (not admin), in the compartment."""
        return self.hide_refused and self.is_restricted(principal) and in_compartment(rtype)

    def _check_stored(self, principal: Any, interaction: str, rtype: str, patients: list[access.PatientFacts] | None,
                      rec: Record, missing: Callable[[], FhirError], stored: list[access.PatientFacts] | None = None
                      ) -> None:
        """:meth:`_check` of ``interaction`` on a stored resource (``patients``: its patients, and a write's
        new ones; ``stored``: its own, when not all of them). Where :meth:`_hides` says so, a refusal
        because the caller may not read the stored resource (another facility's patient) answers
        ``missing()``, the 404 of a resource not stored: a 403 told that it exists. Not when the
        caller is refused for the type (a missing one is too: 403), nor when its facility's take-on of
        the patient was ended (it knew the patient: the 403 says when). The AuditEvent records the 403."""
        try:
            self._check(principal, interaction, rtype, patients, rec)
        except access.Denied as err:
            stored = patients if stored is None else stored
            if stored is None or not self._hides(principal, rtype) or any(p.ended for p in stored):
                raise
            compartment = in_compartment(rtype)
            try:
                access.check(principal, interaction, rtype, compartment=compartment)  # asked of a missing id too
            except access.Denied:
                raise err from None
            try:
                access.check(principal, "read", rtype, compartment=compartment, patients=stored)
            except access.Denied:
                raise Hidden(str(err), missing()) from None
            raise

    def _new_patients(self, facts: _Facts, resource: Any) -> list[access.PatientFacts]:
        if not isinstance(resource, dict):
            return []
        if resource.get("resourceType") == "Patient":
            rid = resource.get("id") if isinstance(resource.get("id"), str) else "(new)"
            return [facts.patient(f"Patient/{rid}", body=resource)]
        return facts.many(resource_patients(resource))

    # ------------------------------------------------------------------ reads

    def read(self, req: FhirRequest) -> FhirResponse:
        loaded: dict[str, Any] = {}

        def pre(p: Any, f: _Facts, rec: Record) -> None:
            rtype = self.check_type(req.resource_type)
            rid = check_id(req.rid)
            # one round trip: the document the check needs is the one the read returns
            doc = loaded["doc"] = self.store().read_head(rtype, rid, compartment_param(rtype))
            if rtype == "Patient" and doc is not None and not doc.get("del") and isinstance(doc.get("res"), dict):
                f.stored_patient(f"Patient/{rid}", doc["res"])  # its owners are in the body just read
            self._existing(p, f, rec, "read", rtype, rid, head=doc or {"del": True}, hide=True)

        return self._run("read", req, pre,
                         lambda: super(GuardedFhirServer, self).read(req, doc=loaded.get("doc")))

    def vread(self, req: FhirRequest) -> FhirResponse:
        def pre(p: Any, f: _Facts, rec: Record) -> None:
            rtype = self.check_type(req.resource_type)
            rid = check_id(req.rid)
            doc = self.store().version_doc(rtype, rid, req.vid or "", {"res": 1})
            res = (doc or {}).get("res")
            if res is None:
                self._check(p, "vread", rtype, None, rec)
                return
            refs = resource_patients(res)
            self._check_stored(p, "vread", rtype, f.many(refs) if in_compartment(rtype) else None, rec,
                               lambda: st.no_version(rtype, rid, req.vid or ""))

        return self._run("vread", req, pre, lambda: super(GuardedFhirServer, self).vread(req))

    def history(self, req: FhirRequest) -> FhirResponse:
        interaction = "history" if req.rid is not None else "history-type"

        def pre(p: Any, f: _Facts, rec: Record) -> None:
            if req.resource_type is None:
                if self.is_restricted(p) and not access.is_unrestricted_reader(p):
                    raise access.Denied("system history is for admin and health-dept")
                for t in sorted(self.types):
                    if t != AUDIT_TYPE:
                        access.check(p, "history-type", t, compartment=in_compartment(t))
                return
            rtype = self.check_type(req.resource_type)
            if req.rid is None:
                self._check(p, "history-type", rtype, None, rec)
            else:
                self._existing(p, f, rec, "history", rtype, check_id(req.rid), hide=True)

        return self._run(interaction, req, pre, lambda: super(GuardedFhirServer, self).history(req))

    def everything(self, req: FhirRequest) -> FhirResponse:
        state: dict[str, Any] = {}

        def pre(p: Any, f: _Facts, rec: Record) -> None:
            pid = check_id(req.rid)
            state["patient"] = self.store().read_head("Patient", pid)  # read once: checked, then returned
            self._existing(p, f, rec, "everything", "Patient", pid, head=state["patient"] or _ABSENT, hide=True)

        def call() -> FhirResponse:
            from .everything import everything

            # the audit trail is not part of the record: AuditEvents are searched, not exported
            return everything(_TypesView(self, self.types - {AUDIT_TYPE}), req, state.get("patient"))

        return self._run("everything", req, pre, call, rtype="Patient")

    def search(self, req: FhirRequest, extra: list[tuple[str, str]] | None = None,
               self_path: str | None = None, extra_filter: dict[str, Any] | None = None) -> FhirResponse:
        state: dict[str, Any] = {}

        def pre(p: Any, f: _Facts, rec: Record) -> None:
            rtype = self.check_type(req.resource_type)
            state["scope"] = self.scope_filter(p, rtype)
            rec.query_params = sorted({k for k, _ in req.params if k not in ("_format", "_pretty")})
            state["filter_includes"] = self.is_restricted(p) and any(
                k.startswith(("_include", "_revinclude")) for k, _ in req.params)
            if req.compartment:
                pid = check_id(req.compartment[1])
                rec.query_params.append(f"compartment:{req.compartment[0]}")
                # the compartment's own criterion names this one patient
                self._check(p, "search", rtype, [f.patient(f"Patient/{pid}")], rec)
                return
            self._check(p, "search", rtype, None, rec)
            if not access.search_is_unrestricted(p, rtype, in_compartment(rtype)):
                state["filter"] = self._restriction(f, rtype, req.params)

        def call() -> FhirResponse:
            flt = _all_of(extra_filter, state.get("scope"), state.get("filter"))
            return super(GuardedFhirServer, self).search(req, extra, self_path, extra_filter=flt)

        def post(p: Any, f: _Facts, rec: Record, resp: FhirResponse) -> None:
            entries = (resp.body or {}).get("entry") or []
            if state.get("filter_includes"):
                kept = []
                for e in entries:
                    if (e.get("search") or {}).get("mode") != "include" or self._visible(p, f, e.get("resource")):
                        kept.append(e)
                if len(kept) != len(entries) and resp.body is not None:
                    resp.body["entry"] = kept
                    entries = kept
            rec.count = sum(1 for e in entries if (e.get("search") or {}).get("mode") == "match")
            for e in entries[:200]:
                rec.patients += resource_patients(e.get("resource"))

        return self._run("search", req, pre, call, post)

    def _visible(self, principal: Any, facts: _Facts, resource: Any) -> bool:
        """May ``principal`` read this included resource? (the same rules as a read, the service's scope too)"""
        if not isinstance(resource, dict) or not isinstance(resource.get("resourceType"), str):
            return False
        rtype = resource["resourceType"]
        if self.scope_denial(principal, rtype, {"res": resource}) is not None:
            return False
        compartment = in_compartment(rtype)
        try:
            access.check(principal, "read", rtype, compartment=compartment,
                         patients=facts.many(resource_patients(resource)) if compartment else None)
        except access.Denied:
            return False
        return True

    def _restriction(self, facts: _Facts, rtype: str, params: Iterable[tuple[str, str]]) -> dict[str, Any]:
        """The filter limiting a restricted principal's search of ``rtype`` (by ``params``) to the patients
        it reaches."""
        if rtype == "Patient":
            return access.patient_filter(facts.reach())
        param = compartment_param(rtype) or "patient"
        named: set[str] = set()
        for key, value in params:
            if key in ("patient", "subject", param):
                for v in value.split(","):
                    v = v.strip()
                    if v and "/" not in v and "?" not in v:
                        named.add(f"Patient/{v}")
                    elif v.startswith("Patient/") and v.count("/") == 1:
                        named.add(v)
                    else:
                        named = set()
                        break
        if named:  # the search names its patients: check just those instead of listing every patient reached
            ok = [r for r in sorted(named) if self._reachable(facts, r)]
            return access.compartment_filter(param, ok)
        return access.compartment_filter(param, facts.accessible())

    def sub_search_filter(self, resource_type: str) -> dict[str, Any] | None:
        """A chain's or a ``_has``'s sub-search sees what the caller's own search of ``resource_type`` would:
        a type its role does not search is refused (403, whatever the records), one it searches through its
        patients is limited to them. Before, the sub-search ran over every facility's records, so a type
        the caller searches freely answered for records it may not read (a clinic's
        ``Practitioner?_has:Observation:performer:subject=Patient/<another facility's>``, a cashier's
        ``Patient?_has:Observation:subject:code=...``). The service's own scope (:meth:`scope_filter`) is
        ANDed in, as in the caller's own search."""
        principal = self.principal()
        scope = self.scope_filter(principal, resource_type)
        if not self.is_restricted(principal):
            return scope
        compartment = in_compartment(resource_type)
        access.check(principal, "search", resource_type, compartment=compartment)
        if access.search_is_unrestricted(principal, resource_type, compartment):
            return scope
        return _all_of(scope, self._restriction(_Facts(self, principal), resource_type, ()))

    def scope_filter(self, principal: Any, resource_type: str | None) -> dict[str, Any] | None:
        """A service's own limit on what ``principal`` finds of ``resource_type`` beyond whose patient it is
        (teleconsult: a clinic its facility's consults, a hub's doctor its hub's), ANDed into every search
        the caller makes: its own, a chain's or a ``_has``'s sub-search, a condition (:meth:`match_ids`).
        None: no limit (here, always)."""
        return None

    def scope_denial(self, principal: Any, resource_type: str, head: dict[str, Any] | None) -> str | None:
        """Why :meth:`scope_filter` keeps this stored document (or ``{"res": body}``) from ``principal``; None:
        it does not. An ``_include``/``_revinclude``'s resource it keeps out is left out of the bundle."""
        return None

    def match_ids(self, resource_type: str, query: str | list[tuple[str, str]], limit: int = 2,
                  extra_filter: dict[str, Any] | None = None) -> list[str]:
        """A condition (If-None-Exist, a conditional update or delete, a conditional reference) sees what
        the caller's search would: a resource it may not see matches as none, so that a condition is no
        way to learn of another facility's patient (its match was a 403 naming it). A condition matching
        only such a resource is a miss: a conditional create creates, a conditional update creates."""
        principal = self.principal()
        extra_filter = _all_of(extra_filter, self.scope_filter(principal, resource_type))
        if not access.search_is_unrestricted(principal, resource_type, in_compartment(resource_type)):
            params = parse_query(query) if isinstance(query, str) else list(query)
            extra_filter = _all_of(extra_filter, self._restriction(_Facts(self, principal), resource_type, params))
        return super().match_ids(resource_type, query, limit, extra_filter=extra_filter)

    @staticmethod
    def _reachable(facts: _Facts, ref: str) -> bool:
        return access.reaches(facts.principal, facts.patient(ref))

    def reaches_patient(self, principal: Any, ref: str) -> bool:
        """May ``principal`` see the stored ``Patient/<id>`` ``ref`` (an admin, its owner, or granted it)?"""
        return not self.is_restricted(principal) or self._reachable(_Facts(self, principal), ref)

    # ------------------------------------------------------------------ writes

    def create(self, req: FhirRequest) -> FhirResponse:
        def pre(p: Any, f: _Facts, rec: Record) -> None:
            rtype = self.check_type(req.resource_type)
            body = req.body if isinstance(req.body, dict) else None
            if body is not None and body.get("resourceType") == "Patient":
                body = {**body, "id": "(new)"}
            self._check(p, "create", rtype, self._new_patients(f, body) if in_compartment(rtype) else None, rec)

        def post(p: Any, f: _Facts, rec: Record, resp: FhirResponse) -> None:
            body = resp.body if isinstance(resp.body, dict) else {}
            rec.rid = body.get("id") if isinstance(body.get("id"), str) else _id_from_location(resp)
            rec.patients = [r for r in rec.patients if r != "Patient/(new)"]
            if rec.resource_type == "Patient" and rec.rid:
                rec.patients.append(f"Patient/{rec.rid}")
            elif body:
                rec.patients += resource_patients(body)
            if resp.status == 200 and rec.rid and rec.resource_type:  # If-None-Exist matched an existing one
                self._existing(p, f, rec, "read", rec.resource_type, rec.rid)

        return self._run("create", req, pre, lambda: super(GuardedFhirServer, self).create(req), post)

    def update(self, req: FhirRequest) -> FhirResponse:
        def pre(p: Any, f: _Facts, rec: Record) -> None:
            rtype = self.check_type(req.resource_type)
            rid = check_id(req.rid)
            self._check_write(p, f, rec, "update", rtype, rid, req.body)

        return self._run("update", req, pre, lambda: super(GuardedFhirServer, self).update(req))

    def conditional_update(self, req: FhirRequest) -> FhirResponse:
        def pre(p: Any, f: _Facts, rec: Record) -> None:
            rtype = self.check_type(req.resource_type)
            # resolved once: the engine's conditional update uses this resolution (req.resolved)
            ids = self.condition(req, rtype, req.params)[2] if req.params else []
            rid = ids[0] if len(ids) == 1 else None
            if not ids and isinstance(req.body, dict) and isinstance(req.body.get("id"), str):
                rid = req.body["id"]  # no match: the engine writes the body's id, so that resource is checked
            rec.rid = rid
            self._check_write(p, f, rec, "update", rtype, rid, req.body)

        return self._run("update", req, pre, lambda: super(GuardedFhirServer, self).conditional_update(req))

    def _check_write(self, p: Any, f: _Facts, rec: Record, interaction: str, rtype: str, rid: str | None,
                     body: Any) -> None:
        if not in_compartment(rtype):
            self._check(p, interaction, rtype, None, rec)
            return
        head = self.store().head(rtype, rid) if rid else None
        before = f.many(head_patients(rtype, head))
        new_body = body if isinstance(body, dict) else None
        if new_body is not None and rtype == "Patient" and rid:
            new_body = {**new_body, "id": rid}
        after = self._new_patients(f, new_body)
        if head is None or head.get("del"):
            interaction = "create" if interaction == "update" else interaction
        patients = [*before, *after]
        # a body the engine will refuse anyway (400) is not a reason to hide 403 behind it
        self._check(p, interaction, rtype, patients if (patients or new_body is not None) else None, rec)

    def patch(self, req: FhirRequest) -> FhirResponse:
        def pre(p: Any, f: _Facts, rec: Record) -> None:
            from .patch import apply_patch

            rtype = self.check_type(req.resource_type)
            rid = check_id(req.rid)
            if not in_compartment(rtype):
                self._check(p, "patch", rtype, None, rec)
                return
            doc = unpack(self.store().current(rtype).find_one({"_id": rid}, {"res": 1, "del": 1}))
            if doc is None or doc.get("del") or doc.get("res") is None:
                self._check(p, "patch", rtype, None, rec)
                return
            before = f.many(resource_patients(doc["res"]))
            try:
                after_res = apply_patch(copy.deepcopy(doc["res"]), req.body)
            except FhirError:
                after_res = None  # the engine reports the bad patch; judge on what is stored
            after = self._new_patients(f, after_res) if after_res is not None else []
            self._check_stored(p, "patch", rtype, [*before, *after], rec, lambda: st.not_found(rtype, rid),
                               stored=before)

        return self._run("patch", req, pre, lambda: super(GuardedFhirServer, self).patch(req))

    def delete(self, req: FhirRequest) -> FhirResponse:
        def pre(p: Any, f: _Facts, rec: Record) -> None:
            rtype = self.check_type(req.resource_type)
            self._existing(p, f, rec, "delete", rtype, check_id(req.rid), hide=True)

        return self._run("delete", req, pre, lambda: super(GuardedFhirServer, self).delete(req))

    # ------------------------------------------------------------------ bundles

    def bundle(self, req: FhirRequest) -> FhirResponse:
        body = req.body if isinstance(req.body, dict) else {}
        with self.auditor.batch():
            if body.get("type") != "transaction" or not isinstance(body.get("entry"), list):
                return super().bundle(req)  # batch: every entry runs through the guarded methods
            return self._transaction(req, body)

    def _transaction(self, req: FhirRequest, body: dict[str, Any]) -> FhirResponse:
        from .bundle import parse_url, refused_entry

        principal = self.principal()
        entries = [e for e in body["entry"] if isinstance(e, dict)]
        writes: list[tuple[int, str, str | None, Record]] = []
        for i, e in enumerate(entries):
            request = e.get("request") if isinstance(e.get("request"), dict) else {}
            method = str(request.get("method", "")).upper()
            if method not in WRITE_METHODS:
                continue
            try:
                target = parse_url(request.get("url"), req.base, f"Bundle.entry[{i}].request.url")
            except FhirError:
                continue  # the engine answers 400 for it
            writes.append((i, WRITE_METHODS[method], target.resource_type,
                           Record(WRITE_METHODS[method], resource_type=target.resource_type, rid=target.rid)))
        for i, interaction, rtype, _rec in writes:
            if rtype in SERVER_WRITTEN:  # whoever asks: the entry's 422 (bundle.refused_entry), not a 403
                with refused_entry(i, rtype):
                    self.check_writable(rtype, interaction)
        if self.is_restricted(principal):
            facts = _Facts(self, principal)
            by_url = {e.get("fullUrl"): e.get("resource") for e in entries if isinstance(e.get("fullUrl"), str)}
            for i, interaction, rtype, rec in writes:
                try:
                    self._check_entry(principal, facts, entries[i], interaction, rtype, rec, by_url, req)
                except access.Denied as err:
                    rec.status, rec.detail = 403, str(err)
                    self.auditor.record(principal, rec)
                    raise FhirError(f"forbidden: Bundle.entry[{i}]: {err}", status=403, code="forbidden",
                                    expression=[f"Bundle.entry[{i}]"]) from None
        try:
            resp = super().bundle(req)
        except FhirError as err:
            for _, _, rtype, rec in writes:
                if rtype != AUDIT_TYPE:
                    rec.status, rec.detail = err.status, err.detail
                    self.auditor.record(principal, rec)
            raise
        out = (resp.body or {}).get("entry") or []
        for i, _interaction, rtype, rec in writes:
            if rtype == AUDIT_TYPE or i >= len(out):
                continue
            r = (out[i] or {}).get("response") or {}
            status_text = str(r.get("status", "200"))
            rec.status = int(status_text.split()[0]) if status_text.split()[0].isdigit() else 200
            parts = str(r.get("location") or "").split("/")
            if len(parts) >= 4 and parts[-2] == "_history":
                rec.rid = parts[-3]
            res = entries[i].get("resource")
            if isinstance(res, dict):
                if rec.rid is None and isinstance(res.get("id"), str):
                    rec.rid = res["id"]
                rec.patients = [r for r in rec.patients if "(new)" not in r and not r.startswith("urn:")]
                rec.patients += resource_patients(res)
            self.auditor.record(principal, rec)
        return resp

    def _check_entry(self, p: Any, f: _Facts, entry: dict[str, Any], interaction: str, rtype: str | None,
                     rec: Record, by_url: dict[str, Any], req: FhirRequest) -> None:
        if rtype is None or rtype not in self.types:
            return  # the engine answers 404/400
        from .bundle import parse_url

        request = entry.get("request") or {}
        target = parse_url(request.get("url"), req.base, "Bundle.entry.request.url")
        rid = target.rid
        if rid is None and target.has_query and interaction in ("update", "delete"):
            # resolved once: the transaction's plan uses this resolution (req.resolved)
            ids = (self.condition(req, rtype, target.params)[2] if interaction == "update"
                   else self.matches(req, rtype, target.params))
            rid = ids[0] if len(ids) == 1 else None
        if not in_compartment(rtype):
            self._check(p, interaction, rtype, None, rec)
            return
        head = self.store().head(rtype, rid) if rid else None
        before = f.many(head_patients(rtype, head))
        after: list[access.PatientFacts] = []
        res = entry.get("resource")
        if isinstance(res, dict):
            if rtype == "Patient":
                after.append(f.patient(f"Patient/{rid or '(new)'}", body=res))
            else:
                for ref in resource_patients(res, raw=True):
                    facts = self._resolve_patient(f, ref, by_url, req)
                    if facts is not None:
                        after.append(facts)
        if interaction == "update" and (head is None or head.get("del")):
            interaction = "create"
        self._check(p, interaction, rtype, [*before, *after], rec)

    def _resolve_patient(self, f: _Facts, ref: str, by_url: dict[str, Any],
                         req: FhirRequest) -> access.PatientFacts | None:
        if ref.startswith("urn:"):
            target = by_url.get(ref)
            if isinstance(target, dict) and target.get("resourceType") == "Patient":
                return f.patient(f"Patient/{ref}", body=target)
            return None  # another resource of this bundle, not a patient
        if ref.startswith("Patient?"):
            ids = self.matches(req, "Patient", ref.partition("?")[2])  # the write resolves it the same
            return f.patient(f"Patient/{ids[0]}") if len(ids) == 1 else access.PatientFacts(ref)
        return f.patient(ref)


class _TypesView:
    """The server seen with fewer resource types (``$everything`` without AuditEvents)."""

    def __init__(self, server: FhirServer, types: frozenset[str]) -> None:
        self._server = server
        self.types = types

    def __getattr__(self, name: str) -> Any:
        return getattr(self._server, name)


def _id_from_location(resp: FhirResponse) -> str | None:
    loc = resp.headers.get("Location") or resp.headers.get("Content-Location") or ""
    parts = loc.split("/")
    if len(parts) >= 4 and parts[-2] == "_history":
        return parts[-3]
    return None


__all__ = ["GuardedFhirServer", "Hidden", "already_recorded", "body_owners", "head_patients", "hidden_refusals",
           "in_compartment", "mark_recorded", "resource_patients"]
