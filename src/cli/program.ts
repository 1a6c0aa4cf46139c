// The commander program: global options and every command (./commands/all.ts), which is
// what `shoal --help` lists. `shoal call` without --help does not come here (main.ts).
import { Command, CommanderError } from 'commander';
import { registerAllCommands } from './commands/all.ts';
import { reportError } from './output.ts';

/** The program with its global options and every command. */
export function createProgram(): Command {
  const program = new Command('shoal')
    .description('Deploy isolated services on demand and compose them with typed TypeScript')
    .version('0.1.0')
    .option('--log-format <format>', 'logs on stderr: pretty, json, or auto (pretty on a terminal, else JSON lines; env SHOAL_LOG_FORMAT)')
    .showHelpAfterError()
    .exitOverride()
    .option('--tls-ca <file>', 'trust this CA (PEM) for https:// providers, stores and hosts, beside the system roots (env SHOAL_TLS_CA)');
  // Every client (the CLI's calls, a host's pulls and its registration, the provider's links to
  // hosts) trusts the operator's CA once it is set here, before any command runs. Long-running
  // roles read the log format through the environment, where their loggers are made.
  program.hook('preAction', async () => {
    const opts = program.opts() as { logFormat?: string; tlsCa?: string };
    if (opts.logFormat !== undefined) process.env.SHOAL_LOG_FORMAT = opts.logFormat;
    const ca = opts.tlsCa ?? process.env.SHOAL_TLS_CA;
    if (ca === undefined || ca === '') return;
    const { trustCaFile } = await import('../http/index.ts');
    trustCaFile(ca);
  });
  registerAllCommands(program);
  return program;
}

/** Runs argv through the full program; the exit code. */
export async function runProgram(argv: string[]): Promise<number> {
  try {
    await createProgram().parseAsync(argv, { from: 'user' });
    return 0;
  } catch (error) {
    if (error instanceof CommanderError) {
      // Help and version exit 0; usage errors exit 2 (commander already printed them).
      return error.exitCode === 0 ? 0 : 2;
    }
    return reportError(error, argv.includes('--json'));
  }
}
