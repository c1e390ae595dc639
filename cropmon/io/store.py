"""Object storage (S3, Google Cloud Storage, Azure Blob): the URLs users give (`s3://bucket/key`, `gs://...`,
`az://container/key`, or GDAL's `/vsis3/...`, `/vsigs/...`, `/vsiaz/...`), GDAL's virtual paths for what GDAL reads
(the raster, vector fields), and pyarrow's file systems for what cropmon reads and writes itself (GeoParquet
fields, the fields' GeoPackage copy, the outputs).

pyarrow.fs, not obstore or fsspec: pyarrow is already a dependency (it reads and writes cropmon's Parquet files),
its wheels carry S3, GCS and Azure clients (the AWS SDK's multipart uploads, ranged reads), and it adds nothing to
the image. What it lacks (conditional writes) the outputs do not need: each run writes under its own prefix and a
pointer object, written last, names the complete run (io/outputs.py).

Settings use GDAL's names (`AWS_S3_ENDPOINT`, `AWS_HTTPS`, `AWS_VIRTUAL_HOSTING`, `AWS_ACCESS_KEY_ID` ...), read
from the process environment, where `StorageSettings.applied` (the client) and the worker plugin (every worker:
runtime.settings_plugin) put them: GDAL (rasterio's and pyogrio's copies both read the environment) and the
pyarrow file systems below then see the same ones.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import re
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cropmon import errors

log = logging.getLogger(__name__)

# URL scheme -> GDAL virtual file system; gcs:// and azure:// are accepted spellings of gs:// and az://.
GDAL_PREFIXES = {"s3": "/vsis3/", "gs": "/vsigs/", "az": "/vsiaz/"}
SCHEME_ALIASES = {"gcs": "gs", "azure": "az"}
KIND = {"s3": "S3", "gs": "Google Cloud Storage", "az": "Azure Blob Storage"}


@dataclass(frozen=True)
class ObjectURL:
    """An object or prefix in a bucket (an Azure container), whichever way it was written."""

    scheme: str  # s3 | gs | az
    bucket: str
    key: str  # no leading slash; "" for the bucket itself

    @property
    def url(self) -> str:
        return f"{self.scheme}://{self.bucket}/{self.key}".rstrip("/") if self.key else f"{self.scheme}://{self.bucket}"

    @property
    def gdal(self) -> str:
        return f"{GDAL_PREFIXES[self.scheme]}{self.bucket}/{self.key}"

    @property
    def arrow(self) -> str:
        """The path pyarrow's file system takes: bucket/key."""
        return f"{self.bucket}/{self.key}".rstrip("/")

    @property
    def name(self) -> str:
        return self.key.rstrip("/").rsplit("/", 1)[-1]

    def join(self, *parts: str) -> ObjectURL:
        key = "/".join(p.strip("/") for p in (self.key, *parts) if p and p.strip("/"))
        return ObjectURL(self.scheme, self.bucket, key)

    def __str__(self) -> str:
        return self.url


_URL = re.compile(r"^(?P<scheme>[a-z0-9]+)://(?P<bucket>[^/]+)/?(?P<key>.*)$", re.IGNORECASE)
_VSI = re.compile(r"^/vsi(?P<fs>s3|gs|az)/+(?P<bucket>[^/]+)/?(?P<key>.*)$")


def parse(path: str | Path | ObjectURL) -> ObjectURL | None:
    """The object `path` names, or None when it is no object-storage path (a local file, /vsizip/, https://)."""
    if isinstance(path, ObjectURL):
        return path
    text = str(path)
    match = _VSI.match(text)
    if match:
        return ObjectURL(match["fs"], match["bucket"], match["key"])
    match = _URL.match(text)
    if match:
        scheme = SCHEME_ALIASES.get(match["scheme"].lower(), match["scheme"].lower())
        if scheme in GDAL_PREFIXES:
            return ObjectURL(scheme, match["bucket"], match["key"])
    return None


def object_url(path: str | Path | ObjectURL) -> ObjectURL:
    """The object `path` names, where the caller knows it is an object-storage path (`parse` says whether)."""
    target = parse(path)
    if target is None:
        raise ValueError(f"{path} is no object-storage path (s3://, gs://, az:// or /vsis3/, /vsigs/, /vsiaz/)")
    return target


def is_object_store(path: str | Path) -> bool:
    return parse(path) is not None


def gdal_path(path: str | Path) -> str | Path:
    """What GDAL opens for `path`: /vsis3/... for an s3:// URL (and gs://, az://), anything else unchanged."""
    target = parse(path)
    return target.gdal if target is not None else path


def url_of(path: str | Path) -> str:
    """An object-storage path as a URL (s3://bucket/key), anything else as given: what run.json and messages say."""
    target = parse(path)
    return target.url if target is not None else str(path)


# -- settings --------------------------------------------------------------------------------------------------------

# The client's environment variables that a run forwards to its workers (a remote worker has its own environment):
# GDAL's and the cloud SDKs' settings, by prefix, less those that name files or directories of the client's machine.
FORWARDED_PREFIXES = ("AWS_", "GDAL_", "CPL_", "VSI_", "GS_", "GOOGLE_", "AZURE_", "OSS_", "SWIFT_")
NOT_FORWARDED = frozenset({
    "GDAL_DATA", "GDAL_DRIVER_PATH", "GDAL_PYTHON_DRIVER_PATH", "GDAL_CACHEMAX", "CPL_LOG", "CPL_LOG_ERRORS",
    "AWS_CA_BUNDLE", "AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE", "CPL_AWS_CREDENTIALS_FILE",
    "GDAL_CURL_CA_BUNDLE", "GOOGLE_APPLICATION_CREDENTIALS", "CPL_GS_CREDENTIALS_FILE", "AWS_WEB_IDENTITY_TOKEN_FILE",
})  # fmt: skip
SECRET_WORDS = (
    "SECRET",
    "TOKEN",
    "PASSWORD",
    "PASSWD",
    "USERPWD",
    "KEY",
    "CREDENTIAL",
    "SAS",
    "SIGNATURE",
    "CONNECTION_STRING",
    "HEADERS",
    "COOKIE",
    "AUTH",
)
REDACTED = "(secret: not recorded)"
_NAME = re.compile(r"^[A-Z][A-Z0-9_]*$")


def is_secret(name: str) -> bool:
    """Whether a setting's value must never be written anywhere (run.json, logs, the report): credentials, tokens,
    signed headers. By name: GDAL's and the SDKs' credential options all carry one of SECRET_WORDS."""
    return any(word in name.upper() for word in SECRET_WORDS)


@dataclass(frozen=True)
class StorageSettings:
    """GDAL configuration options (`[gdal]` in the config file, CROPMON_GDAL_<OPTION>, and the client's forwarded
    AWS_*/GDAL_*/CPL_* ... variables), applied in every process of a run as environment variables.

    Secret values (is_secret) are never shown: not by repr, not in run.json (`as_manifest`)."""

    options: tuple[tuple[str, str], ...] = ()

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any], *, source: str) -> StorageSettings:
        out = {}
        for name, value in values.items():
            key = str(name).upper()
            if not _NAME.match(key):
                raise errors.ConfigError(
                    f"{source}: {name!r} is no GDAL configuration option name",
                    fix='use GDAL\'s names, e.g. AWS_S3_ENDPOINT = "host:9000"',
                )
            if isinstance(value, bool):
                value = "YES" if value else "NO"
            if not isinstance(value, str | int | float) or isinstance(value, bool):
                raise errors.ConfigError(f"{source}: {key} is not a text or a number", fix=f'give {key} = "VALUE"')
            out[key] = str(value)
        return cls(tuple(sorted(out.items())))

    def merged(self, other: StorageSettings) -> StorageSettings:
        """These settings with `other`'s on top."""
        return StorageSettings(tuple(sorted({**dict(self.options), **dict(other.options)}.items())))

    def as_dict(self) -> dict[str, str]:
        return dict(self.options)

    def as_manifest(self) -> dict[str, str]:
        return {name: REDACTED if is_secret(name) else value for name, value in self.options}

    def __repr__(self) -> str:
        return f"StorageSettings({self.as_manifest()})"

    def __bool__(self) -> bool:
        return bool(self.options)

    @contextlib.contextmanager
    def applied(self) -> Iterator[None]:
        """Set these settings as environment variables of this process for the block (GDAL, the AWS SDK and the
        file systems here read them there), then restore what was there."""
        previous = {name: os.environ.get(name) for name, _ in self.options}
        os.environ.update(self.options)
        clear_caches()
        try:
            yield
        finally:
            for name, value in previous.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value
            clear_caches()


# What a run that names object storage sets unless told otherwise: GDAL would otherwise list the object's "directory"
# on open (a request per open, over a whole bucket prefix) and cache the listing for the process's life, so that a
# long-lived worker misses objects written after it first looked (a new input, the fields' copy).
OBJECT_STORAGE_DEFAULTS = (("GDAL_DISABLE_READDIR_ON_OPEN", "EMPTY_DIR"),)


def defaults_for(paths: Sequence[str | Path | None]) -> StorageSettings:
    """The settings a run gets beneath its own when any of `paths` is in object storage (else none)."""
    return (
        StorageSettings(OBJECT_STORAGE_DEFAULTS) if any(p and is_object_store(p) for p in paths) else StorageSettings()
    )


def forwarded_environment(environ: Mapping[str, str] | None = None) -> StorageSettings:
    """The client's variables a run forwards to its workers (FORWARDED_PREFIXES, less NOT_FORWARDED)."""
    environ = os.environ if environ is None else environ
    return StorageSettings(
        tuple(
            sorted(
                (k, v) for k, v in environ.items() if k.startswith(FORWARDED_PREFIXES) and k not in NOT_FORWARDED and v
            )
        )
    )


def clear_caches() -> None:
    """Forget the file systems and GDAL's cached listings made with the previous settings."""
    _filesystem.cache_clear()
    try:
        import pyogrio

        pyogrio.vsi_curl_clear_cache()
    except (ImportError, AttributeError):
        pass


# -- credentials -----------------------------------------------------------------------------------------------------


def _truthy(value: str | None) -> bool:
    return str(value or "").strip().upper() in ("YES", "TRUE", "ON", "1")


def credentials_source(scheme: str, environ: Mapping[str, str] | None = None) -> str | None:
    """Where the credentials for `scheme` come from, in words (never their values), or None when there are none:
    checked before any work, so that a run without credentials fails in one line instead of deep in a worker."""
    env = os.environ if environ is None else environ
    home = Path(env.get("HOME") or Path.home())
    if scheme == "s3":
        if _truthy(env.get("AWS_NO_SIGN_REQUEST")):
            return "none needed (AWS_NO_SIGN_REQUEST=YES: a public bucket)"
        if env.get("AWS_ACCESS_KEY_ID") and env.get("AWS_SECRET_ACCESS_KEY"):
            return "access key (AWS_ACCESS_KEY_ID)" + (" with a session token" if env.get("AWS_SESSION_TOKEN") else "")
        files = [
            env.get("AWS_SHARED_CREDENTIALS_FILE")
            or env.get("CPL_AWS_CREDENTIALS_FILE")
            or home / ".aws" / "credentials",
            env.get("AWS_CONFIG_FILE") or home / ".aws" / "config",
        ]
        for f in files:
            if f and Path(f).is_file():
                return f"profile {env.get('AWS_PROFILE') or env.get('AWS_DEFAULT_PROFILE') or 'default'} ({f})"
        if env.get("AWS_WEB_IDENTITY_TOKEN_FILE") and env.get("AWS_ROLE_ARN"):
            return "web identity (AWS_ROLE_ARN)"
        if env.get("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI") or env.get("AWS_CONTAINER_CREDENTIALS_FULL_URI"):
            return "the container's role (AWS_CONTAINER_CREDENTIALS_*)"
        if not _truthy(env.get("AWS_EC2_METADATA_DISABLED")) and _maybe_ec2():
            return "the EC2 instance's role (instance metadata)"
        return None
    if scheme == "gs":
        if _truthy(env.get("GS_NO_SIGN_REQUEST")):
            return "none needed (GS_NO_SIGN_REQUEST=YES: a public bucket)"
        if env.get("GS_SECRET_ACCESS_KEY") and env.get("GS_ACCESS_KEY_ID"):
            return "HMAC key (GS_ACCESS_KEY_ID)"
        if env.get("GOOGLE_APPLICATION_CREDENTIALS") or env.get("GS_OAUTH2_REFRESH_TOKEN"):
            return "service account or OAuth2 (GOOGLE_APPLICATION_CREDENTIALS, GS_OAUTH2_*)"
        return "Google's default credentials (gcloud, the machine's service account)"
    if scheme == "az":
        if _truthy(env.get("AZURE_NO_SIGN_REQUEST")):
            return "none needed (AZURE_NO_SIGN_REQUEST=YES: a public container)"
        if env.get("AZURE_STORAGE_CONNECTION_STRING"):
            return "connection string (AZURE_STORAGE_CONNECTION_STRING)"
        key = env.get("AZURE_STORAGE_ACCESS_KEY") or env.get("AZURE_STORAGE_SAS_TOKEN")
        if env.get("AZURE_STORAGE_ACCOUNT") and key:
            return "account key or SAS (AZURE_STORAGE_ACCOUNT)"
        if env.get("AZURE_STORAGE_ACCOUNT"):
            return "Azure's default credentials (managed identity, az login)"
        return None
    return None


def _maybe_ec2() -> bool:
    """GDAL's own test (cpl_aws.cpp): /sys/hypervisor/uuid starts with 'ec2', or the DMI vendor is 'Amazon EC2'; a
    machine with neither file may be one (GDAL then asks the metadata service)."""
    for path, mark in (("/sys/hypervisor/uuid", "ec2"), ("/sys/devices/virtual/dmi/id/sys_vendor", "amazon ec2")):
        try:
            return Path(path).read_text().strip().lower().startswith(mark)
        except OSError:
            continue
    return True


CREDENTIALS_FIX = {
    "s3": "set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (environment, or the config file's [gdal] table), "
    "AWS_PROFILE with ~/.aws/credentials, or AWS_NO_SIGN_REQUEST=YES for a public bucket",
    "gs": "set GOOGLE_APPLICATION_CREDENTIALS, or GS_ACCESS_KEY_ID and GS_SECRET_ACCESS_KEY",
    "az": "set AZURE_STORAGE_ACCOUNT with AZURE_STORAGE_ACCESS_KEY or AZURE_STORAGE_SAS_TOKEN "
    "(or AZURE_STORAGE_CONNECTION_STRING)",
}


def require_credentials(path: str | Path) -> None:
    """Raise MissingCredentials (exit 2) when `path` is in object storage and no credentials can be found."""
    target = parse(path)
    if target is not None and credentials_source(target.scheme) is None:
        raise errors.MissingCredentials(
            f"no {KIND[target.scheme]} credentials found", path=target.url, fix=CREDENTIALS_FIX[target.scheme]
        )


def describe(paths: list[str | Path]) -> dict[str, Any]:
    """run.json's `object_storage`: per scheme used, the endpoint and where the credentials come from (no values)."""
    out: dict[str, Any] = {}
    for path in paths:
        target = parse(path)
        if target is None or target.scheme in out:
            continue
        entry: dict[str, Any] = {"credentials": credentials_source(target.scheme)}
        if target.scheme == "s3":
            options = s3_options(os.environ)
            entry["endpoint"] = (
                f"{options.get('scheme', 'https')}://{options['endpoint_override']}"
                if options.get("endpoint_override")
                else "AWS"
            )
            entry["region"] = options.get("region")
        out[target.scheme] = entry
    return out


# -- pyarrow file systems -------------------------------------------------------------------------------------------


def s3_options(environ: Mapping[str, str]) -> dict[str, Any]:
    """pyarrow.fs.S3FileSystem's arguments from GDAL's settings (AWS_S3_ENDPOINT, AWS_HTTPS, AWS_REGION,
    AWS_VIRTUAL_HOSTING, the keys), so that GDAL and pyarrow reach the same endpoint with the same credentials."""
    env = environ
    options: dict[str, Any] = {}
    endpoint = env.get("AWS_S3_ENDPOINT") or env.get("AWS_ENDPOINT_URL_S3") or env.get("AWS_ENDPOINT_URL")
    if endpoint:
        scheme, sep, host = endpoint.partition("://")
        if not sep:
            scheme, host = (
                ("http" if env.get("AWS_HTTPS", "YES").upper() in ("NO", "FALSE", "OFF", "0") else "https"),
                endpoint,
            )
        options.update(endpoint_override=host.rstrip("/"), scheme=scheme)
    region = env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION")
    if region:
        options["region"] = region
    if _truthy(env.get("AWS_NO_SIGN_REQUEST")):
        options["anonymous"] = True
    elif env.get("AWS_ACCESS_KEY_ID") and env.get("AWS_SECRET_ACCESS_KEY"):
        options.update(access_key=env["AWS_ACCESS_KEY_ID"], secret_key=env["AWS_SECRET_ACCESS_KEY"])
        if env.get("AWS_SESSION_TOKEN"):
            options["session_token"] = env["AWS_SESSION_TOKEN"]
    if _truthy(env.get("AWS_VIRTUAL_HOSTING")):
        options["force_virtual_addressing"] = True
    return options


def filesystem(scheme: str):
    """The pyarrow file system for `scheme`, with this process's current settings (cached until they change)."""
    keys = tuple(sorted((k, v) for k, v in os.environ.items() if k.startswith(FORWARDED_PREFIXES)))
    return _filesystem(scheme, keys)


@functools.lru_cache(maxsize=8)
def _filesystem(scheme: str, environ: tuple[tuple[str, str], ...]):
    import pyarrow.fs as pafs

    env = dict(environ)
    if scheme == "s3":
        return pafs.S3FileSystem(**s3_options(env))
    if scheme == "gs":
        return pafs.GcsFileSystem(anonymous=_truthy(env.get("GS_NO_SIGN_REQUEST")))
    if scheme == "az":
        account = env.get("AZURE_STORAGE_ACCOUNT")
        if not account:
            raise errors.MissingCredentials("no Azure storage account given", fix=CREDENTIALS_FIX["az"])
        return pafs.AzureFileSystem(
            account_name=account,
            account_key=env.get("AZURE_STORAGE_ACCESS_KEY"),
            sas_token=env.get("AZURE_STORAGE_SAS_TOKEN"),
        )
    raise ValueError(f"no file system for {scheme!r}")


def _fs_and_path(path: str | Path | ObjectURL) -> tuple[Any, str]:
    target = parse(path)
    if target is None:
        raise ValueError(f"{path} is no object-storage path")
    return filesystem(target.scheme), target.arrow


def open_input(path: str | Path | ObjectURL):
    """A seekable pyarrow file of an object (ranged reads: Parquet reads its footer and the columns it needs)."""
    fs, key = _fs_and_path(path)
    try:
        return fs.open_input_file(key)
    except OSError as exc:
        raise problem(path, exc, what="file") from exc


def info(path: str | Path | ObjectURL) -> tuple[int, int] | None:
    """(size in bytes, modification time in ns) of an object, or None when there is none."""
    import pyarrow.fs as pafs

    fs, key = _fs_and_path(path)
    got = fs.get_file_info(key)
    if got.type != pafs.FileType.File:
        return None
    return int(got.size or 0), int(got.mtime_ns or 0)


def upload(local: str | Path, path: str | Path | ObjectURL) -> None:
    """Copy a local file to an object (S3: a single PUT, or a multipart upload for a large file: the object
    appears whole or not at all)."""
    fs, key = _fs_and_path(path)
    with open(local, "rb") as src, fs.open_output_stream(key) as dst:
        while chunk := src.read(8 * 2**20):
            dst.write(chunk)


def write_bytes(path: str | Path | ObjectURL, data: bytes) -> None:
    fs, key = _fs_and_path(path)
    with fs.open_output_stream(key) as dst:
        dst.write(data)


def read_bytes(path: str | Path | ObjectURL) -> bytes | None:
    """An object's bytes, or None when there is none."""
    fs, key = _fs_and_path(path)
    try:
        with fs.open_input_stream(key) as src:
            return src.read()
    except FileNotFoundError:
        return None


def list_objects(prefix: str | Path | ObjectURL) -> list[tuple[ObjectURL, int, int]]:
    """(object, size, modification time in ns) of every object under `prefix` ([] when there is none)."""
    import pyarrow.fs as pafs

    target = object_url(prefix)
    fs, key = _fs_and_path(prefix)
    selector = pafs.FileSelector(key, recursive=True, allow_not_found=True)
    out = []
    for entry in fs.get_file_info(selector):
        if entry.type == pafs.FileType.File:
            bucket, _, name = entry.path.partition("/")
            out.append((ObjectURL(target.scheme, bucket, name), int(entry.size or 0), int(entry.mtime_ns or 0)))
    return out


def delete_prefix(prefix: str | Path | ObjectURL) -> int:
    """Delete every object under `prefix`; returns how many there were."""
    fs, _ = _fs_and_path(prefix)
    objects = list_objects(prefix)
    for target, _, _ in objects:
        with contextlib.suppress(FileNotFoundError):
            fs.delete_file(target.arrow)
    return len(objects)


def check_bucket(path: str | Path | ObjectURL, *, writable: bool) -> None:
    """Fail before any work when the bucket of `path` is missing, or (`writable`) cannot be written: one probe
    object is written and deleted."""
    import pyarrow.fs as pafs

    target = object_url(path)
    require_credentials(target.url)
    fs = filesystem(target.scheme)
    try:
        if fs.get_file_info(target.bucket).type == pafs.FileType.NotFound:
            raise errors.MissingBucket(
                f"the bucket {target.bucket!r} does not exist", path=target.url, fix=_bucket_fix(target)
            )
        if writable:
            probe = target.join(f".cropmon-probe-{os.getpid()}-{os.urandom(4).hex()}")
            write_bytes(probe, b"cropmon\n")
            fs.delete_file(probe.arrow)
    except OSError as exc:
        raise problem(target.url, exc, what="output location") from exc


def _bucket_fix(target: ObjectURL) -> str:
    where = (
        f" on {os.environ['AWS_S3_ENDPOINT']}" if target.scheme == "s3" and os.environ.get("AWS_S3_ENDPOINT") else ""
    )
    return f"create it{where}, or check its name and the endpoint/region settings (AWS_S3_ENDPOINT, AWS_REGION)"


# How GDAL's and pyarrow's messages (and the services' error codes in them) say what went wrong, lower-cased.
NO_BUCKET_TEXTS = ("bucket does not exist", "no_such_bucket", "nosuchbucket", "bucketnotfound")
ACCESS_DENIED_TEXTS = ("access denied", "access_denied", "accessdenied", "forbidden", "invalidaccesskeyid",
                       "signaturedoesnotmatch")
NO_OBJECT_TEXTS = ("does not exist in the file system", "not found", "no such key", "nosuchkey", "key does not exist")


def problem(path: str | Path | ObjectURL, exc: BaseException, *, what: str) -> errors.InputError:
    """The one-line error for a failed object-storage access, from GDAL's or pyarrow's words: no credentials, no
    bucket, no such object, access denied; else a generic one naming the service's message."""
    target = parse(path)
    shown = target.url if target is not None else str(path)
    text = errors.first_line(exc)
    lower = text.lower()
    scheme = target.scheme if target is not None else "s3"
    if "credentials" in lower and ("not defined" in lower or "no valid" in lower or "not filled" in lower):
        return errors.MissingCredentials(
            f"no {KIND[scheme]} credentials found ({text[:160]})", path=shown, fix=CREDENTIALS_FIX[scheme]
        )
    if any(t in lower for t in NO_BUCKET_TEXTS):
        return errors.MissingBucket(
            f"the bucket {target.bucket if target else '?'!r} does not exist",
            path=shown,
            fix=_bucket_fix(target) if target else "check the bucket's name",
        )
    if any(t in lower for t in ACCESS_DENIED_TEXTS):
        return errors.ObjectStoreError(
            f"access denied ({text[:200]})",
            path=shown,
            fix="check the credentials and that they may read (and, for --out, write) it",
        )
    if isinstance(exc, FileNotFoundError) or any(t in lower for t in NO_OBJECT_TEXTS):
        return errors.MissingFile(
            f"no such object (the {what} does not exist in the bucket)",
            path=shown,
            fix=f"check the {what}'s key (the path after the bucket)",
        )
    return errors.ObjectStoreError(
        f"cannot be read or written ({text[:200]})",
        path=shown,
        fix="check the endpoint (AWS_S3_ENDPOINT, AWS_HTTPS), the network and the credentials",
    )


def local_scratch() -> Path:
    """A private local directory for files on their way to or from a bucket."""
    return Path(tempfile.mkdtemp(prefix="cropmon-store-"))
