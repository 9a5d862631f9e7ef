"""email_consumer."""
