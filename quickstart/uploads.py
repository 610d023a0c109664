"""Uploading a file to the share only when it changed, with a progress bar for large ones.

A file the share already holds with the same size and MD5 is left alone, so a second run
uploads only what changed. The MD5 goes into the file's content settings only after its upload
completed, so a broken-off upload is never mistaken for a good copy.
"""

import base64
import hashlib
import mimetypes

from azure.common import AzureMissingResourceHttpError
from azure.storage.file import ContentSettings
from tqdm import tqdm

PROGRESS_BAR_FROM = 1 << 20  # bytes: smaller files upload in a blink


def upload_if_changed(service, share, directory, name, path, label=None):
    """Upload ``path`` as ``directory/name`` unless the share has it already; says which, naming
    the file as ``label`` (default: its name)."""
    label = label or name
    size, md5 = path.stat().st_size, file_md5(path)
    if share_copy_matches(service, share, directory, name, size, md5):
        print(f"Unchanged on the share, not uploaded: {label} ({size:,} bytes, same MD5)")
        return
    hidden = None if size > PROGRESS_BAR_FROM else True  # None: shown on a terminal only
    bar = tqdm(total=size, unit="B", unit_scale=True, desc=label, leave=False, disable=hidden)

    def progress(current, total):
        bar.update(current - bar.n)

    with bar:
        service.create_file_from_path(share, directory, name, str(path), progress_callback=progress)
    content_type = mimetypes.guess_type(name)[0] or "application/octet-stream"
    service.set_file_properties(
        share, directory, name, ContentSettings(content_type=content_type, content_md5=md5)
    )
    print(f"Uploaded {label} ({size:,} bytes)")


def file_md5(path):
    """The base64 MD5 of a file, as Azure Files keeps it in a file's Content-MD5."""
    digest = hashlib.md5()
    with open(path, "rb") as stream:
        for block in iter(lambda: stream.read(1 << 22), b""):
            digest.update(block)
    return base64.b64encode(digest.digest()).decode()


def share_copy_matches(service, share, directory, name, size, md5):
    """Whether the share holds this file already: same size and the MD5 stored after its upload."""
    try:
        existing = service.get_file_properties(share, directory, name).properties
    except AzureMissingResourceHttpError:
        return False
    return existing.content_length == size and existing.content_settings.content_md5 == md5
