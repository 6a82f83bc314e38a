// node-postgres (`pg`) against the stripesync proxy: run by tests/proxy/test_clients.py.
//
// Connection parameters come from the environment (PGHOST, PGPORT, PGUSER, PGPASSWORD,
// PGDATABASE: read by pg itself). Prints one JSON object on stdout.
"use strict";

const { Client } = require("pg");

async function main() {
  const client = new Client();
  await client.connect();
  const out = {};
  try {
    // a parameterized INSERT ... RETURNING (extended protocol, unnamed statement)
    const inserted = await client.query(
      "INSERT INTO stripe.customer (email, name, metadata) VALUES ($1, $2, $3) " +
        "RETURNING id, email, name, metadata, created",
      ["node@example.com", "Node", JSON.stringify({ client: "pg" })],
    );
    const row = inserted.rows[0];
    out.insert = {
      command: inserted.command,
      rowCount: inserted.rowCount,
      fields: inserted.fields.map((f) => f.name),
      id: row.id,
      email: row.email,
      name: row.name,
      metadata: row.metadata,
      createdIsDate: row.created instanceof Date,
      created: row.created.getTime() / 1000,
    };

    // a named prepared statement, executed twice
    const prepared = [];
    for (const n of [1, 2]) {
      const res = await client.query({
        name: "node-insert",
        text: "INSERT INTO stripe.customer (email, balance) VALUES ($1, $2) RETURNING id, balance",
        values: [`node${n}@example.com`, n * 100],
      });
      prepared.push({ rowCount: res.rowCount, id: res.rows[0].id, balance: res.rows[0].balance });
    }
    out.prepared = prepared;

    // an UPDATE with a jsonb parameter
    const updated = await client.query(
      "UPDATE stripe.customer SET name = $1, metadata = metadata || $2::jsonb WHERE id = $3 " +
        "RETURNING name, metadata",
      ["Node Renamed", JSON.stringify({ step: "2" }), row.id],
    );
    out.update = { command: updated.command, rowCount: updated.rowCount, rows: updated.rows };

    // a DELETE
    const deleted = await client.query("DELETE FROM stripe.customer WHERE id = $1", [
      prepared[1].id,
    ]);
    out.delete = { command: deleted.command, rowCount: deleted.rowCount };

    // a write Stripe refuses
    try {
      await client.query("UPDATE stripe.customer SET tax_exempt = $1 WHERE id = $2", [
        "sometimes",
        row.id,
      ]);
      out.refused = null;
    } catch (err) {
      out.refused = { code: err.code, message: err.message, detail: err.detail };
    }

    // the connection is usable afterwards (read-after-write)
    const seen = await client.query("SELECT id, name FROM stripe.customer ORDER BY email");
    out.after = seen.rows;
  } finally {
    await client.end();
  }
  process.stdout.write(JSON.stringify(out) + "\n");
}

main().catch((err) => {
  process.stderr.write(`pg_client failed: ${err.stack || err}\n`);
  process.exit(1);
});
