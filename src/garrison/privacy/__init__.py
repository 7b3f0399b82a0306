"""Per-user data export and erasure (V4, GDPR articles 15, 17 and 20)."""

from garrison.privacy.subject import ErasureReport, erase_user, export_user

__all__ = ["ErasureReport", "erase_user", "export_user"]
