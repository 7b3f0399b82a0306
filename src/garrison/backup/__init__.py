"""Encrypted, integrity-protected backups of every table, and their verified restore (O1)."""

from garrison.backup.container import BackupError, backup_key, plain_header
from garrison.backup.dump import Reporter, create_backup
from garrison.backup.restore import Contents, restore_backup, verify_backup

__all__ = [
    "BackupError",
    "Contents",
    "Reporter",
    "backup_key",
    "create_backup",
    "plain_header",
    "restore_backup",
    "verify_backup",
]
