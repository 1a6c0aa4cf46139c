import pino from 'pino';
import { ShoalError } from '../protocol/index.ts';

export type LogFormat = 'json' | 'pretty';

/**
 * --log-format (env SHOAL_LOG_FORMAT): pretty lines for a person at a terminal, JSON lines
 * (one object each) for anything else, so a pipe or a log collector always gets JSON.
 */
export function logFormat(text = process.env.SHOAL_LOG_FORMAT, isTty = process.stderr.isTTY === true): LogFormat {
  if (text === undefined || text === '' || text === 'auto') return isTty ? 'pretty' : 'json';
  if (text === 'json' || text === 'pretty') return text;
  throw new ShoalError('invalid', `--log-format must be json, pretty or auto, got ${JSON.stringify(text)}`, { field: 'log-format' });
}

/**
 * Structured logs (pino) on stderr; SHOAL_LOG_LEVEL sets the level, logFormat() the shape.
 * The host and store take any { info, warn, error } logger; pino's fits.
 */
export function createLogger(role: string, format: LogFormat = logFormat()) {
  const options = { name: role, level: process.env.SHOAL_LOG_LEVEL ?? 'info' };
  if (format === 'json') return pino(options, pino.destination(2));
  return pino(options, { write: (line: string) => void process.stderr.write(prettyLine(line)) });
}

const LEVELS: Record<number, string> = { 10: 'TRACE', 20: 'DEBUG', 30: 'INFO ', 40: 'WARN ', 50: 'ERROR', 60: 'FATAL' };
const SKIP = new Set(['level', 'time', 'pid', 'hostname', 'name', 'msg']);

/** One pino JSON line as `12:00:01 INFO  up: message key=value …`. */
export function prettyLine(json: string): string {
  let o: Record<string, unknown>;
  try {
    o = JSON.parse(json) as Record<string, unknown>;
  } catch {
    return json.endsWith('\n') ? json : `${json}\n`; // not pino's: pass it on untouched
  }
  const time = typeof o.time === 'number' ? new Date(o.time).toISOString().slice(11, 19) : '';
  const level = LEVELS[o.level as number] ?? String(o.level);
  const fields = Object.entries(o)
    .filter(([k]) => !SKIP.has(k))
    .map(([k, v]) => `${k}=${typeof v === 'string' && !/\s/.test(v) ? v : JSON.stringify(v)}`);
  return `${time} ${level} ${String(o.name ?? '')}: ${String(o.msg ?? '')}${fields.length ? `  ${fields.join(' ')}` : ''}\n`;
}
