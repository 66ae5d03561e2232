"""Sen billing service: price list, charges, invoices, VietQR payments, webhooks, receipts, cashier shifts."""

import sen_shared  # noqa: F401,E402 - first: it silences a warning connexion prints at import
