// API tokens, roles and the audit trail: the gate every server puts in front of its
// handlers, the verifiers behind it, the tokens API, and the state-directory token.
export { createAuthGate, noteAuditService, type AuthGate, type AuthGateOptions } from './gate.ts';
export { createRegistryVerifier, createStaticVerifier, type Principal, type TokenVerifier, type Verdict } from './verifier.ts';
export { requirementFor, isMutating, type Requirement } from './policy.ts';
export { mintToken, hashToken, tokenId, credentialOf, roleAllows, mayInvoke, parseTtl } from './token.ts';
export { createTokensApi, createApiToken, tokenSummary } from './tokens-api.ts';
export { ensureAdminToken, ensureTokenFile, readToken, secureDir, ADMIN_TOKEN_FILE } from './state-token.ts';
export { createFileAuditSink } from './file-audit.ts';
export { createAccessLookup } from './access-lookup.ts';
export { createFarmCredential, type FarmCredential } from './farm-credential.ts';
