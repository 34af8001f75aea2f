// pgsidecar from Node.js (@grpc/grpc-js with @grpc/proto-loader, loading proto/ at run time):
// a Query, a pipelined transaction, and an error read with its SQLSTATE from the status
// details.
//
//   node example.js 127.0.0.1:50051 [table]
//
// Exits non-zero if anything does not behave as documented, so CI can run it.
'use strict';

const path = require('node:path');
const assert = require('node:assert/strict');
const grpc = require('@grpc/grpc-js');
const protoLoader = require('@grpc/proto-loader');

const PROTO_ROOT = path.join(__dirname, '..', '..', 'proto');
const definition = protoLoader.loadSync('dataaccess/v1/data_access.proto', {
  includeDirs: [PROTO_ROOT],
  keepCase: true,
  longs: Number, // int64 values within 2^53 come back as numbers
  enums: String,
  defaults: true,
  oneofs: true, // a Value says which kind it holds in `kind`
});
const { DataAccess } = grpc.loadPackageDefinition(definition).dataaccess.v1;
// The two messages of the status details an error carries, for protobufjs to decode.
const protobuf = require('protobufjs');
const rpc = protobuf.Root.fromJSON({
  nested: {
    google: {
      nested: {
        protobuf: { nested: { Any: { fields: { type_url: { type: 'string', id: 1 }, value: { type: 'bytes', id: 2 } } } } },
        rpc: {
          nested: {
            Status: {
              fields: {
                code: { type: 'int32', id: 1 },
                message: { type: 'string', id: 2 },
                details: { rule: 'repeated', type: 'google.protobuf.Any', id: 3 },
              },
            },
            ErrorInfo: {
              fields: {
                reason: { type: 'string', id: 1 },
                domain: { type: 'string', id: 2 },
                metadata: { keyType: 'string', type: 'string', id: 3 },
              },
            },
          },
        },
      },
    },
  },
});

// The ErrorInfo of a failed call (reason, and metadata with the SQLSTATE), from the
// grpc-status-details-bin trailer.
function errorInfo(err) {
  const raw = err.metadata.get('grpc-status-details-bin')[0];
  if (!raw) return null;
  const status = rpc.lookupType('google.rpc.Status').decode(raw);
  const any = status.details.find((d) => d.type_url.endsWith('/google.rpc.ErrorInfo'));
  return any ? rpc.lookupType('google.rpc.ErrorInfo').decode(any.value) : null;
}

function metadata() {
  const md = new grpc.Metadata();
  if (process.env.PGSIDECAR_TOKEN) md.set('authorization', `Bearer ${process.env.PGSIDECAR_TOKEN}`);
  return md;
}

const deadline = (seconds) => ({ deadline: Date.now() + seconds * 1000 });

function query(client, sql, params = []) {
  return new Promise((resolve, reject) => {
    client.Query({ sql, params }, metadata(), deadline(5), (err, reply) => (err ? reject(err) : resolve(reply)));
  });
}

// Sends begin, every statement and commit before reading any answer (pipelining), then
// collects the answers in order.
function transaction(client, table) {
  return new Promise((resolve, reject) => {
    const call = client.Transaction(metadata(), deadline(10));
    const results = [];
    let committed = null;
    call.on('data', (event) => {
      if (event.event === 'result') {
        if (event.result.outcome !== 'response') reject(new Error(`statement failed: ${JSON.stringify(event.result)}`));
        results.push(event.result.request_id);
      } else if (event.event === 'committed') {
        committed = event.committed.transaction_id;
      } else if (event.event === 'rolled_back') {
        reject(new Error(`rolled back: ${JSON.stringify(event.rolled_back)}`));
      }
    });
    call.on('error', reject);
    call.on('end', () => resolve({ results, committed }));
    call.write({ begin: { priority: 'PRIORITY_NORMAL' } });
    for (let i = 1; i <= 3; i++) {
      call.write({
        execute: {
          request_id: `insert-${i}`,
          sql: `INSERT INTO ${table} (id, note) VALUES ($1, $2) ON CONFLICT (id) DO UPDATE SET note = $2`,
          params: [{ int_value: i }, { text_value: `row ${i}` }],
        },
      });
    }
    call.write({ commit: {} });
    call.end();
  });
}

async function main() {
  const addr = process.argv[2] || '127.0.0.1:50051';
  const table = process.argv[3] || 'pgsidecar_example_node';
  const client = new DataAccess(addr, grpc.credentials.createInsecure());

  await query(client, `CREATE TABLE IF NOT EXISTS ${table} (id int PRIMARY KEY, note text)`);
  const reply = await query(client, 'SELECT $1::int + 1 AS answer, $2::text AS greeting', [
    { int_value: 41 },
    { text_value: 'hello' },
  ]);
  const [answer, greeting] = reply.rows[0].values;
  assert.equal(answer.int_value, 42);
  assert.equal(greeting.text_value, 'hello');
  console.log(`query: answer=${answer.int_value} greeting=${greeting.text_value} (${reply.command_tag})`);

  const tx = await transaction(client, table);
  assert.deepEqual(tx.results, ['insert-1', 'insert-2', 'insert-3']);
  assert.ok(tx.committed, 'committed');
  console.log(`transaction: ${tx.results.length} statements pipelined, committed ${tx.committed}`);

  // The SQLSTATE travels in the status details (grpc-status-details-bin: a google.rpc.Status
  // whose details hold an ErrorInfo); the gRPC code alone says NOT_FOUND.
  await assert.rejects(query(client, 'SELECT * FROM no_such_table_here'), (err) => {
    assert.equal(err.code, grpc.status.NOT_FOUND);
    const info = errorInfo(err);
    assert.equal(info.domain, 'pgsidecar');
    assert.equal(info.reason, 'UNDEFINED_TABLE');
    assert.equal(info.metadata.sqlstate, '42P01');
    console.log(`error: NOT_FOUND ${info.reason} sqlstate=${info.metadata.sqlstate}`);
    return true;
  });

  const count = await query(client, `SELECT count(*)::int FROM ${table}`);
  assert.equal(count.rows[0].values[0].int_value, 3);
  client.close();
  console.log('node example: ok');
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
