import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from raylane.ingest.writer import ShardWriter


def test_shard_writer_rolls_files_at_max_rows_and_keeps_row_order(tmp_path):
    writer = ShardWriter(pafs.LocalFileSystem(), str(tmp_path / "split=train"), "part-00003", max_rows=4)
    for start, n in ((0, 3), (3, 6), (9, 1)):
        writer.write(pa.table({"x": list(range(start, start + n))}))
    assert writer.close() == 10
    files = sorted((tmp_path / "split=train").iterdir())
    assert [f.name for f in files] == ["part-00003-0000.parquet", "part-00003-0001.parquet", "part-00003-0002.parquet"]
    assert [pq.read_table(f).num_rows for f in files] == [4, 4, 2]
    assert [x for f in files for x in pq.read_table(f).column("x").to_pylist()] == list(range(10))


def test_shard_writer_without_rows_writes_no_file(tmp_path):
    writer = ShardWriter(pafs.LocalFileSystem(), str(tmp_path / "quarantine"), "part-00000", max_rows=4)
    assert writer.close() == 0
    assert not (tmp_path / "quarantine").exists()
