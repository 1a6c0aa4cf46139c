// The edge of every server: timeouts, per-client connection caps, and the checks that keep
// browsers and DNS-rebound pages out. One module each server calls (harden-server.ts).
export { clientKey, HARDENING_DEFAULTS, hardenServer, hardeningLimits, type HardeningLimits, type HardeningOptions } from './harden-server.ts';
