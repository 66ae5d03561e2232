"""The provider schemes of sen_billing.domain.webhooks against each provider's own published sample."""

from __future__ import annotations

import json

import pytest
from sen_billing.domain import webhooks as wh
from sen_billing.domain.webhooks import WebhookRejected, read_webhook

# payOS's sample, from its webhook documentation ("Kiểm tra dữ liệu với signature"):
# https://payos.vn/docs/tich-hop-webhook/kiem-tra-du-lieu-voi-signature/
PAYOS_KEY = "1a54716c8f0efb2744fb28b6e38b25da7f67a925d98bc1c18bd8faaecadd7675"
PAYOS_SAMPLE = {
    "code": "00", "desc": "success", "success": True,
    "data": {
        "orderCode": 123, "amount": 3000, "description": "VQRIO123", "accountNumber": "12345678",
        "reference": "TF230204212323", "transactionDateTime": "2023-02-04 18:25:00", "currency": "VND",
        "paymentLinkId": "124c33293c43417ab7879e14c8d9eb18", "code": "00", "desc": "Thành công",
        "counterAccountBankId": "", "counterAccountBankName": "", "counterAccountName": "",
        "counterAccountNumber": "", "virtualAccountName": "", "virtualAccountNumber": "",
    },
    "signature": "412e915d2871504ed31be63c8f62a149a4410d34c4c42affc9006ef9917eaa03",
}

# Casso v2's sample, from its webhook handling guide ("Xử lý sự kiện Webhook", PHP sample):
# https://developer.casso.vn/webhook/xu-ly-su-kien-webhook
CASSO_KEY = "mgExMrjj4i7a1p8Cs6LmFbpCd8lbw4sSX4LZXPag7TKazeIogtR90tvWYTkwQbvs"
CASSO_SAMPLE = {"error": 0, "data": {
    "id": 0, "reference": "MA_GIAO_DICH_THU_NGHIEM", "description": "giao dich thu nghiem", "amount": 599000,
    "runningBalance": 25000000, "transactionDateTime": "2024-10-03 15:06:37", "accountNumber": "88888888",
    "bankName": "VPBank", "bankAbbreviation": "VPB", "virtualAccountNumber": "", "virtualAccountName": "",
    "counterAccountName": "NGUYEN VAN A", "counterAccountNumber": "8888888888", "counterAccountBankId": "970415",
    "counterAccountBankName": "VietinBank"}}
CASSO_HEADER = ("t=1727948258788,v1=ed0a4bd2e826d5cb69988cdb141e6c1a080e21f3b57eb72cd78192220042b9e7dde0868fc667fae"
                "a8e224900fa7904e7c88dfa098032fb2d6b6996856e8b7ff3")
CASSO_T = 1727948258.788

# SePay's sample payload, from its webhook documentation (authentication: 'Authorization: Apikey <key>'):
# https://developer.sepay.vn/en/sepay-webhooks  and  https://developer.sepay.vn/en/sepay-webhooks/xac-thuc
SEPAY_SAMPLE = {"id": 92704, "gateway": "Vietcombank", "transactionDate": "2023-03-25 14:02:37",
                "accountNumber": "0123499999", "code": None, "content": "chuyen tien mua iphone",
                "transferType": "in", "transferAmount": 2277000, "accumulated": 19077000, "subAccount": None,
                "referenceCode": "MBVCB.3278907687", "description": ""}

# Standard Webhooks' signing test vector, from the reference Python library's tests:
# https://github.com/standard-webhooks/standard-webhooks/blob/main/libraries/python/tests/test_webhooks.py
STD_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
STD_ID = "msg_p5jXN8AQM9LWM0D4loKWxJek"
STD_TS = "1614265330"
STD_BODY = b'{"test": 2432232314}'
STD_SIG = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


def raw(obj: object) -> bytes:
    return json.dumps(obj, ensure_ascii=False).encode()


def escaped(obj: object) -> bytes:
    """``obj`` as ASCII JSON: every other character, and a lone surrogate, as its ``\\u`` escape."""
    return json.dumps(obj).encode()


# ------------------------------------------------------------------------------- payOS

def test_payos_sample_verifies() -> None:
    assert wh.payos_signature(PAYOS_SAMPLE["data"], PAYOS_KEY) == PAYOS_SAMPLE["signature"]
    [t] = read_webhook("payos", raw(PAYOS_SAMPLE), {}, PAYOS_KEY, now=0)
    assert (t.transaction_id, t.amount, t.description) == ("TF230204212323", 3000, "VQRIO123")


def test_payos_tampered_amount_or_key_is_rejected() -> None:
    body = json.loads(json.dumps(PAYOS_SAMPLE))
    body["data"]["amount"] = 300000
    with pytest.raises(WebhookRejected) as err:
        read_webhook("payos", raw(body), {}, PAYOS_KEY, now=0)
    assert (err.value.reason, err.value.status) == ("bad_signature", 401)
    with pytest.raises(WebhookRejected):
        read_webhook("payos", raw(PAYOS_SAMPLE), {}, "another key", now=0)


def test_payos_null_is_empty_and_arrays_are_sorted_json() -> None:
    a = wh.payos_signature({"b": None, "a": [{"y": 1, "x": "đ"}]}, "k")
    import hashlib
    import hmac
    expected = hmac.new(b"k", 'a=[{"x":"đ","y":1}]&b='.encode(), hashlib.sha256).hexdigest()
    assert a == expected


def test_payos_without_signature_is_rejected() -> None:
    body = {k: v for k, v in PAYOS_SAMPLE.items() if k != "signature"}
    with pytest.raises(WebhookRejected) as err:
        read_webhook("payos", raw(body), {}, PAYOS_KEY, now=0)
    assert err.value.reason == "missing_signature"


# ------------------------------------------------------------------------------- Casso

def test_casso_sample_verifies_in_its_window() -> None:
    [t] = read_webhook("casso", raw(CASSO_SAMPLE), {"X-Casso-Signature": CASSO_HEADER}, CASSO_KEY, now=CASSO_T + 10)
    assert (t.transaction_id, t.amount, t.bank_reference) == ("0", 599000, "MA_GIAO_DICH_THU_NGHIEM")


def test_casso_signature_is_over_sorted_compact_json_whatever_the_sent_order() -> None:
    # the same object sent with other key order and spacing verifies the same
    reordered = json.dumps({"data": dict(reversed(list(CASSO_SAMPLE["data"].items()))), "error": 0}, indent=2)
    read_webhook("casso", reordered.encode(), {"x-casso-signature": CASSO_HEADER}, CASSO_KEY, now=CASSO_T)


def test_casso_old_timestamp_is_rejected() -> None:
    with pytest.raises(WebhookRejected) as err:
        read_webhook("casso", raw(CASSO_SAMPLE), {"X-Casso-Signature": CASSO_HEADER}, CASSO_KEY,
                     now=CASSO_T + 301)
    assert err.value.reason == "stale"


def test_casso_bad_signature_and_missing_header() -> None:
    bad = CASSO_HEADER[:-1] + ("0" if CASSO_HEADER[-1] != "0" else "1")
    with pytest.raises(WebhookRejected) as err:
        read_webhook("casso", raw(CASSO_SAMPLE), {"X-Casso-Signature": bad}, CASSO_KEY, now=CASSO_T)
    assert err.value.reason == "bad_signature"
    with pytest.raises(WebhookRejected) as err:
        read_webhook("casso", raw(CASSO_SAMPLE), {}, CASSO_KEY, now=CASSO_T)
    assert err.value.reason == "missing_signature"


# ------------------------------------------------------------------------------- SePay

def test_sepay_sample_with_its_key() -> None:
    [t] = read_webhook("sepay", raw(SEPAY_SAMPLE), {"Authorization": "Apikey s3cret"}, "s3cret", now=0)
    assert (t.transaction_id, t.amount, t.description) == ("92704", 2277000, "chuyen tien mua iphone")


def test_sepay_wrong_or_missing_key() -> None:
    for headers in ({"Authorization": "Apikey nope"}, {"Authorization": "Bearer s3cret"}, {}):
        with pytest.raises(WebhookRejected) as err:
            read_webhook("sepay", raw(SEPAY_SAMPLE), headers, "s3cret", now=0)
        assert err.value.status == 401


def test_a_nul_character_refuses_a_transaction_id_but_never_the_money() -> None:
    """PostgreSQL (under FerretDB) cannot store a NUL: a transaction id holding one is no usable key
    (400, recorded by the caller, never applied); in the note or bank details it becomes a space, and
    the transfer counts (found by tools/fuzz: both were 500s)."""
    headers = {"Authorization": "Apikey k"}
    with pytest.raises(WebhookRejected) as err:
        read_webhook("sepay", raw({**SEPAY_SAMPLE, "id": "927\x0004"}), headers, "k", now=0)
    assert err.value.status == 400 and err.value.reason == "malformed"
    [t] = read_webhook("sepay", raw({**SEPAY_SAMPLE, "content": "HD0001\x00 tien", "referenceCode": "MBVCB\x00"}),
                       headers, "k", now=0)
    assert (t.transaction_id, t.amount, t.description) == ("92704", 2277000, "HD0001  tien")
    assert "\x00" not in t.bank_reference


def test_a_lone_surrogate_refuses_a_transaction_id_but_never_the_money() -> None:
    """A lone UTF-16 surrogate (JSON's "\\ud800" without its pair) is no UTF-8 text, which BSON cannot
    encode: in a transaction id it is no usable key (400, recorded, never applied); in the note or bank
    details it becomes U+FFFD and the transfer counts (hand probes beside tools/fuzz: 500s before)."""
    headers = {"Authorization": "Apikey k"}
    with pytest.raises(WebhookRejected) as err:
        read_webhook("sepay", escaped({**SEPAY_SAMPLE, "id": "927\ud800"}), headers, "k", now=0)
    assert err.value.status == 400 and err.value.reason == "malformed"
    body = {**SEPAY_SAMPLE, "content": "HD0001 \udc00tien", "referenceCode": "MB\ud800", "accountNumber": "\udbff1",
            "transactionDate": "2025-03-14 \ud800"}
    [t] = read_webhook("sepay", escaped(body), headers, "k", now=0)
    assert (t.transaction_id, t.amount, t.description) == ("92704", 2277000, "HD0001 \ufffdtien")
    assert (t.bank_reference, t.account, t.paid_at) == ("MB\ufffd", "\ufffd1", "2025-03-14 \ufffd")
    assert "emoji 😀" == read_webhook("sepay", escaped({**SEPAY_SAMPLE, "content": "emoji 😀"}), headers, "k",
                                      now=0)[0].description  # a pair is text, kept


@pytest.mark.parametrize("amount", [2**64, 10**13])
def test_an_amount_past_any_transfer_is_malformed(amount) -> None:
    """More than a VietQR's 13 digits of đồng is no transfer, and 2**64 fits no BSON integer (a 500 before)."""
    with pytest.raises(WebhookRejected) as err:
        read_webhook("sepay", raw({**SEPAY_SAMPLE, "transferAmount": amount}), {"Authorization": "Apikey k"}, "k",
                     now=0)
    assert err.value.status == 400 and "13 digits" in err.value.detail
    [t] = read_webhook("sepay", raw({**SEPAY_SAMPLE, "transferAmount": 10**13 - 1}), {"Authorization": "Apikey k"},
                       "k", now=0)
    assert t.amount == 10**13 - 1


def test_a_body_nested_too_deeply_is_malformed() -> None:
    with pytest.raises(WebhookRejected) as err:
        read_webhook("sepay", b"[" * 5000 + b"]" * 5000, {"Authorization": "Apikey k"}, "k", now=0)
    assert err.value.status == 400 and err.value.reason == "malformed" and "nested" in err.value.detail


def test_sepay_outgoing_transfer_is_not_a_payment() -> None:
    out = {**SEPAY_SAMPLE, "transferType": "out"}
    assert read_webhook("sepay", raw(out), {"Authorization": "Apikey k"}, "k", now=0) == []


# ------------------------------------------------------------------------------- Standard Webhooks

def test_standard_vector_signs_and_verifies() -> None:
    assert wh.standard_signature(STD_ID, STD_TS, STD_BODY, STD_SECRET) == STD_SIG
    headers = {"webhook-id": STD_ID, "webhook-timestamp": STD_TS,
               "webhook-signature": "v1,Ceo5qEr07ixe2NLpvHk3FH9bwy/WavXrAFQ/9tdO6mc= " + STD_SIG}
    assert read_webhook("standard", STD_BODY, headers, STD_SECRET, now=int(STD_TS) + 1) == []  # not a transfer


def test_standard_rejections() -> None:
    good = {"webhook-id": STD_ID, "webhook-timestamp": STD_TS, "webhook-signature": STD_SIG}
    cases = [
        ({**good, "webhook-signature": "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OA="}, int(STD_TS),
         "bad_signature"),
        (good, int(STD_TS) + 301, "stale"),
        (good, int(STD_TS) - 301, "stale"),
        ({k: v for k, v in good.items() if k != "webhook-id"}, int(STD_TS), "missing_signature"),
        ({**good, "webhook-timestamp": "hello"}, int(STD_TS), "bad_signature"),
    ]
    for headers, now, reason in cases:
        with pytest.raises(WebhookRejected) as err:
            read_webhook("standard", STD_BODY, headers, STD_SECRET, now=now)
        assert err.value.reason == reason, headers


def test_standard_transfer_event() -> None:
    body = raw({"type": "transfer.received", "data": {"id": "FT123", "amount": 150000,
                                                       "description": "SEN HD ABC"}})
    headers = {"webhook-id": "msg_1", "webhook-timestamp": "1700000000",
               "webhook-signature": wh.standard_signature("msg_1", "1700000000", body, STD_SECRET)}
    [t] = read_webhook("standard", body, headers, STD_SECRET, now=1700000000)
    assert (t.transaction_id, t.amount) == ("FT123", 150000)


def test_unknown_provider_and_unconfigured_secret() -> None:
    with pytest.raises(WebhookRejected) as err:
        read_webhook("momo", b"{}", {}, "k", now=0)
    assert err.value.status == 404
    with pytest.raises(WebhookRejected) as err:
        read_webhook("sepay", b"{}", {"Authorization": "Apikey "}, "", now=0)
    assert err.value.status == 503


def test_malformed_bodies_are_400_after_a_valid_key() -> None:
    for body in (b"not json", b"[1,2]", b'{"id": 1, "transferAmount": -5}'):
        with pytest.raises(WebhookRejected) as err:
            read_webhook("sepay", body, {"Authorization": "Apikey k"}, "k", now=0)
        assert err.value.status == 400


def test_the_bank_time_is_read_in_vietnam_as_the_providers_send_it() -> None:
    """payOS, Casso (``transactionDateTime``) and SePay (``transactionDate``) write the bank's time as
    ``2023-03-25 14:02:37``, Vietnam's local time without a zone; one with an offset is taken at its word;
    anything else is no time."""
    from datetime import UTC, datetime
    from zoneinfo import ZoneInfo

    from sen_billing.domain.webhooks import bank_time

    vn = ZoneInfo("Asia/Ho_Chi_Minh")
    assert bank_time("2023-03-25 14:02:37") == datetime(2023, 3, 25, 14, 2, 37, tzinfo=vn)
    assert bank_time("2023-03-25 14:02:37").astimezone(UTC) == datetime(2023, 3, 25, 7, 2, 37, tzinfo=UTC)
    assert bank_time("2026-03-14T23:59:59.999") == datetime(2026, 3, 14, 23, 59, 59, 999_000, tzinfo=vn)
    assert bank_time("2026-03-14T16:59:58Z") == datetime(2026, 3, 14, 23, 59, 58, tzinfo=vn)
    for nothing in ("", "  ", "hôm qua", "2026-13-01 00:00:00", "2025-03-14 \ufffd"):
        assert bank_time(nothing) is None
    for sample in (PAYOS_SAMPLE["data"], CASSO_SAMPLE["data"]):
        assert bank_time(sample["transactionDateTime"]) is not None
    assert bank_time(SEPAY_SAMPLE["transactionDate"]) == datetime(2023, 3, 25, 14, 2, 37, tzinfo=vn)


# ------------------------------------------------------------------------------- constant time

def test_every_scheme_decides_by_a_constant_time_comparison(monkeypatch) -> None:
    """Each provider's signature or key is compared with hmac.compare_digest, and its answer decides:
    the published samples verify through it, and are refused when it says no (an == would ignore it)."""
    real = wh.hmac.compare_digest
    calls: list[bool] = []
    answer: list[bool | None] = [None]

    def spy(a, b) -> bool:
        calls.append(real(a, b))
        return calls[-1] if answer[0] is None else answer[0]

    monkeypatch.setattr(wh.hmac, "compare_digest", spy)
    std_headers = {"webhook-id": STD_ID, "webhook-timestamp": STD_TS, "webhook-signature": STD_SIG}
    samples = [("payos", raw(PAYOS_SAMPLE), {}, PAYOS_KEY, 0),
               ("casso", raw(CASSO_SAMPLE), {"X-Casso-Signature": CASSO_HEADER}, CASSO_KEY, CASSO_T),
               ("sepay", raw(SEPAY_SAMPLE), {"Authorization": "Apikey s3cret"}, "s3cret", 0),
               ("standard", STD_BODY, std_headers, STD_SECRET, int(STD_TS))]
    for provider, body, headers, secret, now in samples:
        calls.clear()
        answer[0] = None
        read_webhook(provider, body, headers, secret, now=now)
        assert calls and all(calls), provider  # verified by the constant-time comparison
        answer[0] = False
        with pytest.raises(WebhookRejected) as err:
            read_webhook(provider, body, headers, secret, now=now)
        assert err.value.reason == "bad_signature", provider
