"""A real S3 API server on 127.0.0.1 for tests and benchmarks: moto's S3 (the `moto[server]` test dependency) in a
process of its own, with a request log (method, path, range, status, bytes sent) for counting what a run reads.

    server = S3Server.start(tmp_path)      # a free port on 127.0.0.1
    server.settings()                      # GDAL's options to reach it (AWS_S3_ENDPOINT, AWS_HTTPS ...)
    server.stop()                          # by PID

Run as a script (`python tests/s3_server.py LOG PORT_FILE`), it serves until SIGTERM.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ACCESS_KEY = "cropmon-test-key"
REGION = "us-east-1"
# What keeps GDAL and the AWS SDK off the network when they look for credentials (instance metadata lives on a
# link-local address): the SDK's switch, and GDAL's metadata URL pointed at the discard port of this machine.
NO_INSTANCE_METADATA = {"AWS_EC2_METADATA_DISABLED": "true", "CPL_AWS_EC2_API_ROOT_URL": "http://127.0.0.1:9"}


@dataclass
class S3Server:
    port: int
    proc: subprocess.Popen
    log: Path

    @classmethod
    def start(cls, directory: Path) -> S3Server:
        log, port_file = directory / "s3-requests.jsonl", directory / "s3-port"
        proc = subprocess.Popen(
            [sys.executable, __file__, str(log), str(port_file)],
            stdout=(directory / "s3-server.out").open("w"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env={**os.environ, "PYTHONWARNINGS": "ignore"},
        )
        deadline = time.monotonic() + 60
        while not port_file.exists():
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                raise RuntimeError(f"the S3 server did not start: {(directory / 's3-server.out').read_text()}")
            time.sleep(0.1)
        return cls(int(port_file.read_text()), proc, log)

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.port}"

    def settings(self, *, secret: str = "cropmon-test-secret", **extra: str) -> dict[str, str]:
        """GDAL's options (and the AWS SDK's variables) that reach this server with a key pair."""
        return {
            "AWS_S3_ENDPOINT": self.endpoint,
            "AWS_HTTPS": "NO",
            "AWS_VIRTUAL_HOSTING": "FALSE",
            "GDAL_DISABLE_READDIR_ON_OPEN": "EMPTY_DIR",
            "AWS_REGION": REGION,
            "AWS_ACCESS_KEY_ID": ACCESS_KEY,
            "AWS_SECRET_ACCESS_KEY": secret,
            **NO_INSTANCE_METADATA,
            **extra,
        }

    def filesystem(self):
        import pyarrow.fs as pafs

        return pafs.S3FileSystem(
            access_key=ACCESS_KEY,
            secret_key="x",
            endpoint_override=self.endpoint,
            scheme="http",
            region=REGION,
            allow_bucket_creation=True,
        )

    def make_bucket(self, name: str) -> None:
        self.filesystem().create_dir(name)

    def upload(self, local: Path, bucket_key: str) -> str:
        """Put a local file at bucket/key; returns its s3:// URL."""
        with open(local, "rb") as src, self.filesystem().open_output_stream(bucket_key) as dst:
            dst.write(src.read())
        return f"s3://{bucket_key}"

    def objects(self, prefix: str) -> dict[str, int]:
        """bucket/key -> size of every object under `prefix` (bucket/prefix)."""
        import pyarrow.fs as pafs

        found = self.filesystem().get_file_info(pafs.FileSelector(prefix, recursive=True, allow_not_found=True))
        return {f.path: f.size for f in found if f.type == pafs.FileType.File}

    def read(self, bucket_key: str) -> bytes:
        with self.filesystem().open_input_stream(bucket_key) as src:
            return src.read()

    def requests(self) -> list[dict]:
        if not self.log.exists():
            return []
        return [json.loads(line) for line in self.log.read_text().splitlines() if line.strip()]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)


def serve(log_path: str, port_file: str) -> None:
    """moto's S3 app behind a WSGI wrapper that logs every request, on a free port of 127.0.0.1."""
    import threading

    from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app
    from werkzeug.serving import make_server

    app = DomainDispatcherApplication(create_backend_app)
    lock = threading.Lock()
    out = open(log_path, "a", buffering=1)  # noqa: SIM115 (open for the server's life)

    def logged(environ, start_response):
        record = {
            "method": environ["REQUEST_METHOD"],
            "path": environ.get("PATH_INFO"),
            "query": environ.get("QUERY_STRING"),
            "range": environ.get("HTTP_RANGE"),
        }

        def respond(status, headers, exc_info=None):
            record["status"] = int(status.split()[0])
            return start_response(status, headers, exc_info)

        body = app(environ, respond)
        sent = 0
        try:
            for chunk in body:
                sent += len(chunk)
                yield chunk
        finally:
            if hasattr(body, "close"):
                body.close()
            record.update(bytes=sent, time=time.time())
            with lock:
                out.write(json.dumps(record) + "\n")

    server = make_server("127.0.0.1", 0, logged, threaded=True)
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown).start())
    Path(port_file + ".tmp").write_text(str(server.port))
    os.replace(port_file + ".tmp", port_file)
    server.serve_forever()


if __name__ == "__main__":
    serve(sys.argv[1], sys.argv[2])
