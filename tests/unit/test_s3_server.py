"""The loopback S3 server used by the tests is real: bytes written through pyarrow come back."""

from __future__ import annotations

import socket

import pyarrow.fs as pafs

from tests.s3_server import s3_server


def test_s3_server_roundtrip_and_listing(tmp_path):
    payload = b"id,text\n1,hello s3\n2,\xc3\xa9t\xc3\xa9\n"
    with s3_server(tmp_path) as s3:
        assert s3.url.startswith("http://127.0.0.1:")
        s3.make_bucket("raylane-test")
        fs = s3.filesystem()
        with fs.open_output_stream("raylane-test/prefix/a.csv") as f:
            f.write(payload)

        # A second, independent client (same server) reads back the same bytes.
        with s3.filesystem().open_input_stream("raylane-test/prefix/a.csv") as f:
            assert f.read() == payload

        infos = fs.get_file_info(pafs.FileSelector("raylane-test/prefix", recursive=True))
        assert [(i.path, i.type, i.size) for i in infos] == [
            ("raylane-test/prefix/a.csv", pafs.FileType.File, len(payload))
        ]
        port = int(s3.url.rsplit(":", 1)[1])

    # On exit the server process is gone: nothing listens on its port any more.
    with socket.socket() as sock:
        sock.settimeout(2)
        assert sock.connect_ex(("127.0.0.1", port)) != 0
