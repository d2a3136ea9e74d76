import { readFile } from 'node:fs/promises';
import { describe, expect, it } from 'vitest';
import { resolveServeConfig } from '../../src/config.js';
import { resolveFillConfig } from '../../src/fill/config.js';
import { PI_KEY, evalExpr, evalFails, evalOk } from './nix-eval.js';

/** The modules with an S3 bucket (docs/lab.md): credentials by LoadCredential or an environment file, never the Nix store. */
const summary = (modules: string[], machine: string) => evalOk(evalExpr({ modules, machine }, 'summary'));
const failure = (modules: string[], machine: string) => evalFails(evalExpr({ modules, machine }, 'summary'));
const BUCKET = 's3://nix-cache?endpoint=https://s3.lab.example&region=garage';

describe('build-server module pushing into a bucket', () => {
  const bs = (s3: string, target = BUCKET) => `{
    services.nix-lan-cache.buildServer = {
      enable = true;
      flake = "git@example.org:me/nixos-config.git";
      machines = [ "laptop" ];
      target = "${target}";
      keyFile = "/var/lib/secrets/lab-1.sk";
      s3 = ${s3};
    };
  }`;

  it('passes the shared credentials file with LoadCredential and points the AWS tools at it', async () => {
    const s = await summary(['build-server'], bs('{ credentialsFile = "/var/lib/secrets/aws-credentials"; profile = "lab"; }'));
    const svc = s.systemd.services['nix-lan-cache-build'];
    expect(svc.environment).toMatchObject({ PUSH_TARGET: BUCKET, AWS_SHARED_CREDENTIALS_FILE: '%d/aws-credentials', AWS_PROFILE: 'lab' });
    expect(svc.serviceConfig.LoadCredential).toEqual(['signing-key:/var/lib/secrets/lab-1.sk', 'aws-credentials:/var/lib/secrets/aws-credentials']);
    expect(svc.serviceConfig).not.toHaveProperty('EnvironmentFile');
    expect(JSON.stringify(svc)).not.toContain('AWS_SECRET_ACCESS_KEY');
  });

  it('or reads an environment file with the keys (systemd reads it, the store never sees it)', async () => {
    const s = await summary(['build-server'], bs('{ environmentFile = "/run/secrets/lab-s3.env"; }'));
    const svc = s.systemd.services['nix-lan-cache-build'];
    expect(svc.serviceConfig.EnvironmentFile).toBe('/run/secrets/lab-s3.env');
    expect(svc.serviceConfig.LoadCredential).toEqual(['signing-key:/var/lib/secrets/lab-1.sk']);
    expect(svc.environment).not.toHaveProperty('AWS_SHARED_CREDENTIALS_FILE');
  });

  it('refuses credentials in the Nix store and a target that is not a cache URL', async () => {
    expect(await failure(['build-server'], bs('{ credentialsFile = "/nix/store/aaaa-aws-credentials"; }'))).toMatch(/s3\.credentialsFile' is not of type `null or absolute path outside the Nix store/);
    expect(await failure(['build-server'], bs('{ }', 's3://Bad_Bucket'))).toMatch(/buildServer\.target' is not of type `cache directory \(\/…\), ssh:\/\/\[user@\]host\/path or s3:\/\/BUCKET/);
  });
});

describe('client module reading a bucket', () => {
  it('takes s3:// in lan and upstreams, with credentials from an environment file, in a config file the CLI accepts', async () => {
    const s = await summary(['client'], `{
      services.nix-lan-cache = {
        enable = true;
        trustedPublicKeys = [ "${PI_KEY}" ];
        lan = [ "${BUCKET}" ];
        s3.environmentFile = "/run/secrets/nix-cache-read.env";
      };
    }`);
    const svc = s.systemd.services['nix-lan-cache'];
    expect(svc.serviceConfig).toMatchObject({ EnvironmentFile: '/run/secrets/nix-cache-read.env', DynamicUser: true });
    const file = /--config (\S+)$/.exec(svc.serviceConfig.ExecStart)![1]!;
    const json = JSON.parse(await readFile(file, 'utf8')) as { lan: string[] };
    expect(json.lan).toEqual([BUCKET]);
    expect(resolveServeConfig({ config: file }).lan).toEqual([BUCKET]);
  });

  it('or a credentials file by LoadCredential', async () => {
    const s = await summary(['client'], `{
      services.nix-lan-cache = { enable = true; upstreams = [ "${BUCKET}" "https://cache.nixos.org" ]; s3.credentialsFile = "/run/secrets/aws"; };
    }`);
    const svc = s.systemd.services['nix-lan-cache'];
    expect(svc.serviceConfig.LoadCredential).toEqual(['aws-credentials:/run/secrets/aws']);
    expect(svc.environment).toMatchObject({ AWS_SHARED_CREDENTIALS_FILE: '%d/aws-credentials' });
  });
});

describe('Pi module whose fill keeps the cache in a bucket', () => {
  const pi = (s3: string) => `{
    services.nix-lan-cache.pi = { enable = true; keyName = "lab-1"; fill = { enable = true; bucket = "${BUCKET}"; maxSize = "2T"; s3 = ${s3}; }; };
  }`;

  it('runs fill on the bucket with a spool in its state directory, and gc on the bucket with the same credentials and the network', async () => {
    const s = await summary(['pi'], pi('{ credentialsFile = "/var/lib/secrets/aws-credentials"; }'));
    const fill = s.systemd.services['nix-lan-cache-fill'];
    expect(fill.environment).toMatchObject({ AWS_SHARED_CREDENTIALS_FILE: '%d/aws-credentials' });
    expect(fill.serviceConfig).toMatchObject({ StateDirectory: 'nix-lan-cache-fill', LoadCredential: ['aws-credentials:/var/lib/secrets/aws-credentials'] });
    const file = /--config (\S+)$/.exec(fill.serviceConfig.ExecStart)![1]!;
    expect(JSON.parse(await readFile(file, 'utf8'))).toMatchObject({ cache: BUCKET, spoolDir: '/var/lib/nix-lan-cache-fill' });
    expect(resolveFillConfig({ config: file })).toMatchObject({ cache: BUCKET, spoolDir: '/var/lib/nix-lan-cache-fill' });

    const gc = s.systemd.services['nix-lan-cache-gc'];
    for (const line of gc.serviceConfig.ExecStart as string[]) expect(line).toContain(`gc --cache '${BUCKET}'`);
    expect(gc.serviceConfig).toMatchObject({ PrivateNetwork: false, LoadCredential: ['aws-credentials:/var/lib/secrets/aws-credentials'] });
    expect(gc.serviceConfig.RestrictAddressFamilies).toContain('AF_INET');
    expect(s.systemd.tmpfiles.rules).toContain('f /var/lib/nix-cache/nix-cache-info 0644 nix-cache nix-cache - StoreDir: /nix/store');
    expect(s.failedAssertions).toEqual([]);
  });

  it('asks for credentials rather than starting without them', async () => {
    const s = await summary(['pi'], pi('{ }'));
    expect(s.failedAssertions).toEqual([expect.stringMatching(/fill\.bucket is set: give fill its credentials/)]);
  });
});
