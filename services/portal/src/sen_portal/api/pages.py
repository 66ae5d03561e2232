"""The portal's pages (server-rendered; Vietnamese first, English beside it)."""

from __future__ import annotations

from html import escape

from sen_shared.runtime import current

_LINKS = [
    ("Hồ sơ sức khỏe điện tử", "Electronic health record", "ehr", 8081, "/fhir/metadata"),
    ("Hội chẩn từ xa", "Remote consultation", "teleconsult", 8082, "/readyz"),
    ("Thanh toán", "Billing and QR payments", "billing", 8083, "/readyz"),
]


def home() -> tuple[str, int, dict[str, str]]:
    rt = current()
    items = "\n".join(
        f'<li><strong>{escape(vi)}</strong> <span lang="en">/ {escape(en)}</span> '
        f'— <code>{escape(svc)}</code> :{port}{escape(path)}</li>'
        for vi, en, svc, port, path in _LINKS)
    page = f"""<!doctype html>
<html lang="vi"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width,initial-scale=1">
<title>Sen — Y tế số tỉnh</title></head>
<body>
<h1>Sen — Hệ thống y tế số của tỉnh <span lang="en">/ Provincial digital health</span></h1>
<p>Hội chẩn từ xa, hồ sơ sức khỏe điện tử và thanh toán không dùng tiền mặt cho mọi cơ sở y tế.
<span lang="en">Remote consultation, electronic health records and cashless payment for every facility.</span></p>
<ul>
{items}
</ul>
<p><small>Dịch vụ / service: {escape(rt.settings.service)}</small></p>
</body></html>"""
    return page, 200, {"Content-Type": "text/html"}
