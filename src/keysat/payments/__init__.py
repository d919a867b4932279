"""Payment providers: the provider protocol, the sandbox, BTCPay Server and Zaprite."""
