// The `shoal` command. Each sub-command lives in ./commands/. `shoal call` (the command
// people run most, and the one whose start-up shows) has a path of its own: its arguments
// are read with node:util's parseArgs, and it loads node:http and the error module only.
// Every other command, and `shoal call --help`, goes through commander (./program.ts),
// which loads them all; commander alone costs ~20 ms of start-up (--cpu-prof).
import { reportError } from './output.ts';

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
  if (commandOf(argv) === 'call' && !argv.includes('--help') && !argv.includes('-h')) {
    try {
      const { runCall } = await import('./commands/call.ts');
      await runCall(argv);
      return 0;
    } catch (error) {
      return reportError(error, argv.includes('--json'));
    }
  }
  const { runProgram } = await import('./program.ts');
  return runProgram(argv);
}

const code = await main(process.argv.slice(2));
// Long-running commands (up, store, host) keep the event loop alive and never return
// here until they stop; everything else exits with its code.
process.exitCode = code;
