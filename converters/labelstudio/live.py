"""A live Label Studio project through label-studio-sdk: config, export download, media download."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from converters.labelstudio.media import ImageResolveError

class LiveProject:
    """A Label Studio project read through label-studio-sdk (``LabelStudio(base_url, api_key)``).

    The SDK decides how to authenticate from the token itself: a JWT (personal access token, LS ≥ 1.18)
    is exchanged at ``/api/token/refresh`` and sent as ``Bearer`` (re-exchanged when the access token
    expires); anything else is a legacy token sent as ``Token``. The token is never printed or put in
    messages.
    """

    def __init__(self, url: str, token: str, project_id: int) -> None:
        from label_studio_sdk import LabelStudio

        self.url = url.rstrip("/")
        self.project_id = int(project_id)
        self._client = LabelStudio(base_url=self.url, api_key=token)

    def user_id(self, email: str) -> Optional[int]:
        """The id of the user with this email (JSON exports name annotators by id only)."""
        for user in self._client.users.list():
            if str(getattr(user, "email", "")).lower() == email.strip().lower():
                return int(user.id)
        return None

    def label_config(self) -> str:
        return str(self._client.projects.get(id=self.project_id).label_config)

    def download_export(self, dest: Path) -> Path:
        """Stream the project's JSON export (all tasks) to ``dest`` without holding it in memory."""
        with open(dest, "wb") as fh:
            for chunk in self._client.projects.exports.download_sync(
                    id=self.project_id, export_type="JSON", download_all_tasks=True):
                fh.write(chunk)
        return dest

    def _auth_headers(self) -> dict[str, str]:
        headers = self._client._client_wrapper.get_headers()  # the SDK's own PAT→access exchange / legacy
        return {k: v for k, v in headers.items() if k.lower() == "authorization"}

    def download(self, src: str, dest: Path) -> None:
        """Download an image the task references (relative LS paths are on this server).

        The token goes only where :func:`~converters.labelstudio.fetch.sends_token` allows (a Label Studio media
        path on this very host, decided on the URL as ``requests`` sends it), the same rule as the backend's.
        """
        import requests

        from converters.labelstudio.fetch import ImageFetchError, prepared_url, sends_token, unsafe_url_reason

        unsafe = unsafe_url_reason(src)
        if unsafe is not None:
            raise ImageResolveError(f"image {src!r} {unsafe}: refused")
        try:
            url = prepared_url(src if "://" in src else self.url + src)
        except ImageFetchError as exc:
            raise ImageResolveError(str(exc)) from None
        headers = self._auth_headers() if sends_token(url, self.url) else {}
        with requests.get(url, headers=headers, timeout=60, stream=True) as resp:
            if resp.status_code != 200:
                raise ImageResolveError(f"image {src}: HTTP {resp.status_code} from the server")
            with open(dest, "wb") as fh:
                for chunk in resp.iter_content(1 << 16):
                    fh.write(chunk)
