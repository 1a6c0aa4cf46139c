// The `shoal` command. Each sub-command lives in ./commands/. `shoal call` (the command
// people run most, and the one whose start-up shows) is registered alone, so its path
// loads commander, node:http and the error module only; any other command loads them all
// (./commands/all.ts), which is what `--help` lists.
import { Command, CommanderError } from 'commander';
import { reportError } from './output.ts';

/** The program with its global options and no command yet. */
export function baseProgram(): Command {
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
    const format = (program.opts() as { logFormat?: string }).logFormat;
    if (format !== undefined) process.env.SHOAL_LOG_FORMAT = format;
    const ca = (program.opts() as { tlsCa?: string }).tlsCa ?? process.env.SHOAL_TLS_CA;
    if (ca === undefined || ca === '') return;
    const { trustCaFile } = await import('../http/index.ts');
    trustCaFile(ca);
  });
  return program;
}

/** The full program (every command), or only `call` when that is what runs. */
export async function createProgram(argv: string[] = []): Promise<Command> {
  const program = baseProgram();
  if (commandOf(argv) === 'call') {
    const { registerCallCommand } = await import('./commands/call.ts');
    registerCallCommand(program);
  } else {
    const { registerAllCommands } = await import('./commands/all.ts');
    registerAllCommands(program);
  }
  return program;
}

/** The sub-command's name: the first word that is not a global option or its value. */
function commandOf(argv: string[]): string | undefined {
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (a === '--log-format' || a === '--tls-ca') i++;
    else if (!a.startsWith('-')) return a;
  }
  return undefined;
}

export async function main(argv: string[]): Promise<number> {
  try {
    const program = await createProgram(argv);
    await program.parseAsync(argv, { from: 'user' });
    return 0;
  } catch (error) {
    if (error instanceof CommanderError) {
      // Help and version exit 0; usage errors exit 2 (commander already printed them).
      return error.exitCode === 0 ? 0 : 2;
    }
    return reportError(error, argv.includes('--json'));
  }
}

const code = await main(process.argv.slice(2));
// Long-running commands (up, store, host) keep the event loop alive and never return
// here until they stop; everything else exits with its code.
process.exitCode = code;
