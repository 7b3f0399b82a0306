"""The use-case layer: each administrative action once, for the CLI and the HTTP routes alike."""

from garrison.usecases.admin import AdminActions, Rotation, user_resource

__all__ = ["AdminActions", "Rotation", "user_resource"]
