# SPDX-License-Identifier: Apache-2.0
"""Import and export (CSV, JSON, NDJSON) through the package."""

import json

import pytest

import tillsync


def test_export_text_and_file(store, tmp_path):
    store.execute(
        "INSERT INTO products VALUES('p1', 'tea', 10); INSERT INTO products VALUES('p2', NULL, 3)"
    )
    csv = store.export(table="products")
    assert csv.splitlines()[0] == '"id","name","stock"' and len(csv.splitlines()) == 3
    rows = json.loads(store.export(table="products", format="json"))
    assert {r["id"]: r["stock"] for r in rows} == {"p1": 10, "p2": 3}
    out = tmp_path / "p.ndjson"
    assert store.export(out, query="SELECT id FROM products WHERE stock > 5") == 1
    assert [json.loads(x) for x in out.read_text().splitlines()] == [{"id": "p1"}]
    with pytest.raises(tillsync.InvalidError):
        store.export(table="products", query="SELECT 1")
    with pytest.raises(tillsync.NotFoundError):
        store.export(table="nope")
    with pytest.raises(tillsync.InvalidError):
        store.export(table="products", format="xml")


def test_import_round_trip(pair, tmp_path):
    a, b = pair
    a.execute(
        "INSERT INTO products VALUES('p1', 'tea', 10); INSERT INTO products VALUES('p2', 'jam', 3)"
    )
    path = tmp_path / "p.csv"
    a.export(path, table="products")
    r = b.import_("products", path=path)
    assert (r.rows, r.imported, r.rejected) == (2, 2, 0)
    assert b.hash("products") == a.hash("products")
    # Imported rows are captured and sealed: they replicate.
    assert b.status()["unsealed"] == 0
    r = b.import_("products", data='{"id":"p3","name":"oil","stock":1}\n', format="ndjson")
    assert r.imported == 1


def test_import_bad_values(store, tmp_path):
    data = 'id,name,stock\np1,tea,10\np2,jam,many\n'
    with pytest.raises(tillsync.RefusedError) as ei:
        store.import_("products", data=data)
    e = ei.value
    assert e.name == "TSYNC_EREFUSED" and e.report.imported == 0
    assert len(e.report.bad) == 1 and "-:3" in e.report.bad[0], e.report.bad
    assert store.execute("SELECT count(*) FROM products") == [("0",)]
    rejects = tmp_path / "rejects.csv"
    r = store.import_("products", data=data, skip_bad=True, rejects=rejects)
    assert (r.imported, r.rejected) == (1, 1)
    assert "p2" in rejects.read_text()
