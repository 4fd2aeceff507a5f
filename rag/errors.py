"""The errors a user can cause and fix: one base class, so the CLI has one thing to catch.

Every subclass carries a one-line message that says what to do. The CLI prints it and exits with
status 2; the chat shows it as a notice. Anything else that escapes is a bug in the program.
"""
from __future__ import annotations


class RagError(Exception):
    """A problem the user can fix; its message is one line that says how."""


class UserError(RagError):
    """Bad command-line input (a missing questions file, a bad option value)."""


class QuestionError(RagError, ValueError):
    """The question cannot be asked as given (e.g. it is blank)."""


class CorpusError(RagError):
    """The corpus folder is missing or holds no readable document."""


class EmbedderError(RagError):
    """A model cannot be loaded offline."""


class IndexStoreError(RagError):
    """The index folder cannot be used as it is."""


class ReaderError(RagError):
    """The shipped reader weights are missing or do not match their checksum."""


class IndexDamagedError(IndexStoreError):
    """The index folder is damaged (``CURRENT``, the manifest or a data file cannot be used).

    ``rag index`` rebuilds such an index from scratch, with a warning; ``problem`` says what was
    found, for that warning.
    """

    def __init__(self, index_dir: object, problem: str) -> None:
        super().__init__(f"index at {index_dir} is damaged ({problem}); run `rag index --rebuild`")
        self.index_dir = index_dir
        self.problem = problem


class IndexBusyError(IndexStoreError):
    """Another build of the same index held its lock for longer than the wait allowed."""


class ClusterError(RagError):
    """A Ray cluster (``rag index --ray``) cannot be reached or failed the build; the previous
    index stays in use."""
