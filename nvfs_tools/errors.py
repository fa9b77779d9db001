"""Typed errors shared by the library and the tools.

Library code raises these; the tools catch :class:`NvfsError` at the top and
print ``prog: message`` on one line with the documented exit code, so users
never see a Python traceback.
"""

from __future__ import annotations

import errno


class NvfsError(Exception):
    """Base of every error the tools report to the user."""

    #: fsck(8)-style operational error unless a subclass says otherwise.
    exit_code = 8


class UsageError(NvfsError):
    """Bad options or arguments."""

    exit_code = 16


class DeviceError(NvfsError):
    """The device or image cannot be opened, sized, mapped, read or written."""


class DeviceBusyError(DeviceError):
    """The device is mounted or held open exclusively by someone else."""


class NotNvfsError(NvfsError):
    """The device does not hold an NVFS filesystem (no valid superblock)."""


class UnsupportedFeatureError(NvfsError):
    """The filesystem uses incompatible features these tools do not know."""


class CorruptError(NvfsError):
    """An on-media structure is inconsistent; fsck.nvfs can repair it."""


class FsOperationError(NvfsError):
    """A file-level operation failed; carries the matching errno."""

    errno_value = errno.EIO

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.errno = self.errno_value


class NoSuchFileError(FsOperationError):
    errno_value = errno.ENOENT


class FileExistsError_(FsOperationError):
    errno_value = errno.EEXIST


class NotADirectoryError_(FsOperationError):
    errno_value = errno.ENOTDIR


class IsADirectoryError_(FsOperationError):
    errno_value = errno.EISDIR


class DirectoryNotEmptyError(FsOperationError):
    errno_value = errno.ENOTEMPTY


class NoSpaceError(FsOperationError):
    errno_value = errno.ENOSPC


class NameTooLongError(FsOperationError):
    errno_value = errno.ENAMETOOLONG


class InvalidArgumentError(FsOperationError):
    errno_value = errno.EINVAL


class ReadOnlyError(FsOperationError):
    errno_value = errno.EROFS
