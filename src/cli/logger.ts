import pino from 'pino';

/**
 * Structured logs (pino, JSON lines) on stderr; SHOAL_LOG_LEVEL sets the level.
 * The host and store take any { info, warn, error } logger; pino's fits.
 */
export function createLogger(role: string) {
  return pino({ name: role, level: process.env.SHOAL_LOG_LEVEL ?? 'info' }, pino.destination(2));
}
