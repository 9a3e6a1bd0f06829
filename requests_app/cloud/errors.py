"""The one error type every cloud adapter raises."""

from __future__ import annotations


class CloudError(Exception):
    """A cloud call that failed. `message` is for people; `permanent` says whether retrying can help.

    `code` is the service's own error code (e.g. `PrincipalNotFound`, `AADSTS700213`, `AlreadyExists`);
    `retry_after` is the service's hint in seconds, when it gave one.
    """

    def __init__(
        self,
        message: str,
        *,
        permanent: bool,
        code: str = "",
        status: int | None = None,
        retry_after: float | None = None,
    ):
        super().__init__(message)
        self.message = message
        self.permanent = permanent
        self.code = code
        self.status = status
        self.retry_after = retry_after
