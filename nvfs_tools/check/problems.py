"""THE problem table of fsck.nvfs: every inconsistency it can report, once.

Each entry has a stable code (used by ``--json``, the tests and docs/fsck.md),
the pass that finds it, a one-line message template (``str.format`` fields
filled from the problem's details), a severity, whether ``-p`` (preen) may fix
it without a human, and the fix applied when the answer is yes.  The text
output, the JSON report and docs/fsck.md are all generated from this table, so
a problem cannot be reported in a way the documentation does not describe.

Severities: ``error`` (an inconsistency: left unfixed it makes fsck exit 4),
``notice`` (crash leftovers that the format expects fsck to clean up: journal
replay, orphan deletes, leaked blocks; still counted as a modification).
"""

from __future__ import annotations

from typing import NamedTuple


class ProblemDef(NamedTuple):
    """One row of the problem table."""

    code: str
    pass_no: int
    message: str
    severity: str
    preen_safe: bool
    fix: str


_ROWS: tuple[ProblemDef, ...] = (
    # -- pass 0: superblock, microjournal, orphan list -------------------------------------------
    ProblemDef(
        "SB_PRIMARY_BAD",
        0,
        "primary superblock is damaged ({reason}); using the backup copy at block {block}",
        "error",
        True,
        "rewrite the primary static superblock from the backup copy",
    ),
    ProblemDef(
        "SB_BACKUP_BAD",
        0,
        "backup superblock at block {block} is damaged or differs from the primary ({reason})",
        "error",
        True,
        "rewrite the backup copy from the primary",
    ),
    ProblemDef(
        "SB_GROUP_COPY_BAD",
        0,
        "superblock copy of group {group} at block {block} is damaged or differs from the primary",
        "error",
        True,
        "rewrite the group's copy from the primary",
    ),
    ProblemDef(
        "SB_DYN_STATE",
        0,
        "dynamic superblock: unknown state bits {value:#x}",
        "error",
        True,
        "clear the unknown bits",
    ),
    ProblemDef(
        "SB_STATE_FLAGGED",
        0,
        "filesystem state: {what}",
        "error",
        True,
        "check fully; the state becomes CLEAN at the end when nothing is left to fix",
    ),
    ProblemDef(
        "RESERVED_NONZERO",
        0,
        "{what}: reserved or unused bytes are not zero (block {block})",
        "error",
        True,
        "zero them",
    ),
    ProblemDef(
        "MEDIA_BAD_BLOCK",
        0,
        "bad media: {where}",
        "error",
        False,
        "keep the block out of every read, write and allocation (it reads as zeros): file data there is lost"
        " but stays mapped; metadata there is rebuilt by the later passes where it can be (bitmaps and"
        " counters recomputed, a lost directory page's surviving children moved to lost+found, the inodes"
        " of a lost inode-table block treated as free, their blocks freed when nothing else owns them)",
    ),
    ProblemDef(
        "SB_ORPHAN_HEAD",
        0,
        "orphan list: {reason} (inode {ino})",
        "error",
        True,
        "cut the orphan list at the bad link",
    ),
    ProblemDef(
        "JOURNAL_REPLAY",
        0,
        "microjournal slot {slot}: committed transaction {seq} with {count} stores not yet cleared",
        "notice",
        True,
        "replay the stores (idempotent) and clear the slot",
    ),
    ProblemDef(
        "JOURNAL_DISCARD",
        0,
        "microjournal slot {slot}: invalid transaction ({reason})",
        "notice",
        True,
        "discard the transaction (clear the slot's commit word)",
    ),
    ProblemDef(
        "ORPHAN_DELETE",
        0,
        "inode {ino} on the orphan list ({kind}, {size} bytes): delete was interrupted",
        "notice",
        True,
        "complete the delete: free its blocks and the inode, pop it from the list",
    ),
    ProblemDef(
        "ORPHAN_NAMED",
        0,
        "inode {ino} on the orphan list ({kind}, {size} bytes) is still named: unlink was interrupted early",
        "notice",
        True,
        "keep the inode (clear its orphan link) and take it off the list",
    ),
    # -- pass 1: inodes and block maps -----------------------------------------------------------
    ProblemDef(
        "INODE_RESERVED",
        1,
        "reserved inode {ino} is in use (mode {mode:#o})",
        "error",
        False,
        "clear the inode",
    ),
    ProblemDef(
        "INODE_BAD_MODE",
        1,
        "inode {ino}: bad file type in mode {mode:#o}",
        "error",
        False,
        "clear the inode",
    ),
    ProblemDef(
        "INODE_BAD_FIELD",
        1,
        "inode {ino}: {field} is {value} ({reason})",
        "error",
        True,
        "set {field} to {fixed}",
    ),
    ProblemDef(
        "INODE_BAD_FLAGS",
        1,
        "inode {ino}: bad flags {flags:#x} ({reason})",
        "error",
        True,
        "clear the offending flag bits",
    ),
    ProblemDef(
        "INODE_BAD_BLOCK",
        1,
        "inode {ino}: illegal block {block} at {where} ({reason})",
        "error",
        False,
        "clear the block pointer (a hole reads as zeros)",
    ),
    ProblemDef(
        "INODE_PAST_EOF",
        1,
        "inode {ino}: block {block} mapped past the end of the file (file block {fblock}, size {size})",
        "notice",
        True,
        "unmap and free the block",
    ),
    ProblemDef(
        "INODE_ZERO_INDIRECT",
        1,
        "inode {ino} ({path}): {where} is block {block}, which holds no pointer",
        "notice",
        True,
        "clear the pointer to it (a hole) and free the block",
    ),
    ProblemDef(
        "INODE_BLOCK_COUNT",
        1,
        "inode {ino}: block count {found} should be {expected}",
        "error",
        True,
        "set the block count",
    ),
    ProblemDef(
        "INODE_BAD_SIZE",
        1,
        "inode {ino}: size {found} should be {expected} ({reason})",
        "error",
        True,
        "set the size",
    ),
    ProblemDef(
        "INODE_DUP_BLOCK",
        1,
        "block {block} is claimed by {count} owners: {owners}",
        "error",
        False,
        "give each owner but the first its own copy of the block",
    ),
    ProblemDef(
        "INODE_BAD_XATTR",
        1,
        "inode {ino}: bad extended attribute block {block} ({reason})",
        "error",
        False,
        "drop the extended attribute block",
    ),
    ProblemDef(
        "INODE_BAD_SYMLINK",
        1,
        "inode {ino}: bad symbolic link ({reason})",
        "error",
        False,
        "clear the inode",
    ),
    ProblemDef(
        "INODE_BAD_SPECIAL",
        1,
        "inode {ino}: {kind} has {reason}",
        "error",
        True,
        "clear the fields a special file may not use",
    ),
    ProblemDef(
        "INODE_STALE_ORPHAN",
        1,
        "inode {ino}: orphan link {value} set but the inode is not on the orphan list",
        "error",
        True,
        "clear the orphan link",
    ),
    ProblemDef(
        "INODE_BAD_DIR_BANK",
        1,
        "directory {ino}: live bank flag is {value}, not 0 or 1",
        "error",
        False,
        "select bank {bank}",
    ),
    # -- pass 2: directories ---------------------------------------------------------------------
    ProblemDef(
        "DIR_BAD_TREE",
        2,
        "directory {ino}: bad radix tree or page at block {block} ({reason})",
        "error",
        False,
        "rebuild the directory from the entries that can still be read",
    ),
    ProblemDef(
        "DIR_BAD_ENTRY",
        2,
        "directory {ino}: bad entry at block {block} offset {offset} ({reason})",
        "error",
        False,
        "remove the entry",
    ),
    ProblemDef(
        "DIR_MISPLACED",
        2,
        "entry {path} (inode {child}) is not where its name hashes to ({reason})",
        "error",
        True,
        "rebuild the directory so every entry is reachable through its hash",
    ),
    ProblemDef(
        "DIR_DUP_NAME",
        2,
        "directory {path}: duplicate entry {name} (inode {child})",
        "error",
        False,
        "remove the duplicate entry",
    ),
    ProblemDef(
        "DIR_ENTRY_BAD_INO",
        2,
        "entry {path} points to {reason} inode {child}",
        "error",
        False,
        "remove the entry",
    ),
    ProblemDef(
        "DIR_FILE_TYPE",
        2,
        "entry {path}: file type {found} should be {expected}",
        "error",
        True,
        "set the file type",
    ),
    # -- pass 3: connectivity --------------------------------------------------------------------
    ProblemDef(
        "ROOT_BAD",
        3,
        "root inode {ino} is {reason}",
        "error",
        False,
        "clear it (pass 1) / create a new empty root directory (pass 3); everything else goes to /lost+found",
    ),
    ProblemDef(
        "LOST_FOUND_MISSING",
        3,
        "/lost+found {reason}",
        "error",
        True,
        "create /lost+found",
    ),
    ProblemDef(
        "DIR_MULTI_LINK",
        3,
        "directory inode {child} has an extra entry {path} (it lives at {keep})",
        "error",
        False,
        "remove the extra entry",
    ),
    ProblemDef(
        "DIR_UNCONNECTED",
        3,
        "unconnected directory inode {ino} (recorded parent {parent})",
        "error",
        False,
        "connect it to /lost+found as #{ino}",
    ),
    ProblemDef(
        "DIR_BAD_PARENT",
        3,
        "directory {path} (inode {ino}): parent pointer {found} should be {expected}",
        "error",
        True,
        "set the parent pointer",
    ),
    # -- pass 4: reference counts ----------------------------------------------------------------
    ProblemDef(
        "INODE_UNATTACHED_EMPTY",
        4,
        "unattached inode {ino} ({kind}, {why}): residue of an operation that never committed",
        "notice",
        True,
        "clear the inode",
    ),
    ProblemDef(
        "INODE_UNATTACHED",
        4,
        "unattached inode {ino} ({kind}, {size} bytes)",
        "error",
        False,
        "connect it to /lost+found as #{ino}",
    ),
    ProblemDef(
        "LINK_COUNT",
        4,
        "inode {ino} ({path}): link count {found} should be {expected}",
        "error",
        True,
        "set the link count",
    ),
    # -- pass 5: bitmaps and counters ------------------------------------------------------------
    ProblemDef(
        "BLOCK_BITMAP",
        5,
        "group {group}: block bitmap differences: {diffs}",
        "notice",
        True,
        "rewrite the group's block bitmap",
    ),
    ProblemDef(
        "INODE_BITMAP",
        5,
        "group {group}: inode bitmap differences: {diffs}",
        "notice",
        True,
        "rewrite the group's inode bitmap",
    ),
    ProblemDef(
        "GROUP_COUNTERS",
        5,
        "group {group}: counters block wrong ({diffs})",
        "notice",
        True,
        "rewrite the group's counters",
    ),
    ProblemDef(
        "QUOTA_USAGE",
        5,
        "{kind} quota (file inode {ino}): {count} usage records wrong ({sample})",
        "notice",
        True,
        "rewrite the records from the usage counted over all inodes",
    ),
    ProblemDef(
        "MEDIA_BAD_FREE",
        5,
        "bad media: {count} free block(s) not in the bad-blocks inode ({blocks})",
        "error",
        True,
        "map them into the bad-blocks inode (inode {ino}, created when free) so that nothing allocates them",
    ),
    ProblemDef(
        "SB_FREE_COUNTS",
        5,
        "superblock free counts wrong ({diffs})",
        "notice",
        True,
        "set the superblock totals",
    ),
)

#: code -> definition, in table order.
PROBLEMS: dict[str, ProblemDef] = {row.code: row for row in _ROWS}

PASS_TITLES = {
    0: "Checking the superblock, microjournal and orphan list",
    1: "Checking inodes, blocks, and sizes",
    2: "Checking directory structure",
    3: "Checking directory connectivity",
    4: "Checking reference counts",
    5: "Checking group summary information",
}


def render(code: str, details: dict) -> str:
    """The one-line message of problem ``code`` with ``details`` filled in."""
    return PROBLEMS[code].message.format(**details)


def fix_text(code: str, details: dict) -> str:
    """The fix of problem ``code``, with ``details`` filled in where it has fields."""
    return PROBLEMS[code].fix.format(**details)
