import type { ChildProcess } from 'node:child_process';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { freePort, waitForPort } from './ports.js';
import { runOk, startProcess, stopProcess } from './proc.js';

/** Debian's OpenSSH server on 127.0.0.1 with its own host key, accepting one generated client key for root. */
export class Sshd {
  private constructor(
    private child: ChildProcess | undefined,
    readonly port: number,
    /** Client options (NIX_SSHOPTS style) that log in with the generated key and trust only this host key. */
    readonly clientOpts: string,
  ) {}

  static async start(workDir: string): Promise<Sshd> {
    await mkdir(workDir, { recursive: true });
    await mkdir('/run/sshd', { recursive: true }); // privilege separation dir sshd insists on
    const hostKey = join(workDir, 'host_ed25519');
    const clientKey = join(workDir, 'client_ed25519');
    await runOk('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-f', hostKey]);
    await runOk('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-f', clientKey]);
    await writeFile(join(workDir, 'authorized_keys'), await readFile(`${clientKey}.pub`));
    const port = await freePort();
    const knownHosts = join(workDir, 'known_hosts');
    await writeFile(knownHosts, `[127.0.0.1]:${port} ${(await readFile(`${hostKey}.pub`, 'utf8')).trim()}\n`);
    const config = join(workDir, 'sshd_config');
    await writeFile(
      config,
      [
        `HostKey ${hostKey}`,
        `AuthorizedKeysFile ${join(workDir, 'authorized_keys')}`,
        'PermitRootLogin prohibit-password',
        'PasswordAuthentication no',
        'KbdInteractiveAuthentication no',
        'UsePAM no',
        'StrictModes no',
        'PidFile none',
        'MaxSessions 64',
        'MaxStartups 64',
        'LogLevel ERROR',
        '',
      ].join('\n'),
    );
    const child = startProcess('/usr/sbin/sshd', ['-D', '-e', '-p', String(port), '-f', config, '-o', 'ListenAddress=127.0.0.1'], { stdio: 'ignore' });
    await waitForPort(port);
    const clientOpts = `-i ${clientKey} -o IdentitiesOnly=yes -o UserKnownHostsFile=${knownHosts} -o StrictHostKeyChecking=yes`;
    return new Sshd(child, port, clientOpts);
  }

  async stop(): Promise<void> {
    if (this.child) await stopProcess(this.child, 'SIGTERM');
    this.child = undefined;
  }
}
