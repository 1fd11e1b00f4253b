"""The image errors, under the package's one tree (sandbox.errors)::

SandboxError
└── ImageError               pulling, storing or unpacking an image failed
    ├── RegistryError        the registry refused, failed or could not be reached
    │   └── ImageNotFound    ... the repository, tag or digest does not exist
    ├── DigestMismatch       content does not match its digest or size
    ├── UnsafeLayer          a layer tar tries to write outside its directory
    └── PlatformNotFound     an index has no manifest for the platform asked
"""

from __future__ import annotations

from ..errors import SandboxError


class ImageError(SandboxError):
    """An image could not be pulled, stored or unpacked."""


class RegistryError(ImageError):
    """The registry answered with an error, or could not be reached."""


class ImageNotFound(RegistryError):
    """The registry has no such repository, tag or digest."""


class DigestMismatch(ImageError):
    """Content does not match the digest (or size) it was named by."""


class UnsafeLayer(ImageError):
    """A layer's tar would write outside its layer directory, or is absurd."""


class PlatformNotFound(ImageError):
    """An image index offers no manifest for the platform asked for."""
