// The `shoal` command. Each sub-command lives in ./commands/ and is imported only when
// it runs, so `shoal --help` and quick client commands start fast.
import { Command, CommanderError } from 'commander';
import { reportError } from './output.ts';
import { registerStoreCommands } from './commands/store.ts';
import { registerImageCommands } from './commands/image.ts';
import { registerTemplateCommands } from './commands/template.ts';
import { registerUpCommand } from './commands/up.ts';
import { registerHostCommand } from './commands/host.ts';
import { registerProviderCommand } from './commands/provider.ts';
import { registerServiceCommands } from './commands/service.ts';
import { registerHostsCommand } from './commands/hosts.ts';
import { registerDeploymentsCommand } from './commands/deployments.ts';
import { registerCallCommand } from './commands/call.ts';
import { registerPsCommand } from './commands/ps.ts';
import { registerFarmCommands } from './commands/farm.ts';
import { registerTokenCommands } from './commands/token.ts';
import { registerAuditCommand } from './commands/audit.ts';
import { registerLogsCommand } from './commands/logs.ts';
import { registerDeployCommand } from './commands/deploy.ts';
import { registerStatusCommand } from './commands/status.ts';
import { registerRegistryCommands } from './commands/registry.ts';

export function createProgram(): Command {
  const program = new Command('shoal')
    .description('Deploy isolated services on demand and compose them with typed TypeScript')
    .version('0.1.0')
    .option('--log-format <format>', 'logs on stderr: pretty, json, or auto (pretty on a terminal, else JSON lines; env SHOAL_LOG_FORMAT)')
    .showHelpAfterError()
    .exitOverride()
    .option('--tls-ca <file>', 'trust this CA (PEM) for https:// providers, stores and hosts, beside the system roots (env SHOAL_TLS_CA)');
  // Every client (the CLI's calls, a host's pulls and registration, the provider's links to
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
  registerUpCommand(program);
  registerStoreCommands(program);
  registerHostCommand(program);
  registerProviderCommand(program);
  registerServiceCommands(program);
  registerHostsCommand(program);
  registerDeploymentsCommand(program);
  registerCallCommand(program);
  registerPsCommand(program);
  registerDeployCommand(program);
  registerLogsCommand(program);
  registerStatusCommand(program);
  registerFarmCommands(program);
  registerTokenCommands(program);
  registerRegistryCommands(program);
  registerAuditCommand(program);
  registerTemplateCommands(program);
  registerImageCommands(program);
  return program;
}

export async function main(argv: string[]): Promise<number> {
  const program = createProgram();
  try {
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
