"""Sen billing service: price list, charges, invoices, VietQR payments, webhooks, receipts, cashier shifts."""
