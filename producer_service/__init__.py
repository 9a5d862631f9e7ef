"""producer_service."""
