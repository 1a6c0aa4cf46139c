// The registry contract against a real PostgreSQL server (SHOAL_TEST_DATABASE_URL, an
// admin URL such as postgres://shoal:shoal@127.0.0.1:5432/postgres; .ci/run sets it).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { runRegistryContract } from './registry-contract.ts';
import { postgresDatabases } from './fixtures/databases.ts';

const adminUrl = process.env.SHOAL_TEST_DATABASE_URL;

if (adminUrl) {
  runRegistryContract('postgres', () => postgresDatabases(adminUrl));
} else if (process.env.CI === 'true') {
  test('registry contract: postgres', () => {
    assert.fail('CI=true but SHOAL_TEST_DATABASE_URL is unset: the PostgreSQL half of the registry contract must run in CI');
  });
} else {
  const reason = 'SHOAL_TEST_DATABASE_URL is unset (e.g. postgres://shoal:shoal@127.0.0.1:5432/postgres): PostgreSQL half skipped';
  console.log(`# ${reason}`);
  runRegistryContract('postgres', () => Promise.reject(new Error('unreachable')), { skip: reason });
}
