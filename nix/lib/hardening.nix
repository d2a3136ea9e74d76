# The systemd hardening every long-running nix-lan-cache service shares
# (the proxy, announce, gc). A service adds what it needs on top with `//`.
# No MemoryDenyWriteExecute: Node's JIT needs writable+executable pages.
{
  NoNewPrivileges = true;
  ProtectSystem = "strict";
  ProtectHome = true;
  PrivateTmp = true;
  PrivateDevices = true;
  ProtectHostname = true;
  ProtectClock = true;
  ProtectKernelTunables = true;
  ProtectKernelModules = true;
  ProtectKernelLogs = true;
  ProtectControlGroups = true;
  RestrictNamespaces = true;
  RestrictRealtime = true;
  RestrictSUIDSGID = true;
  LockPersonality = true;
  CapabilityBoundingSet = "";
  SystemCallArchitectures = "native";
  SystemCallFilter = [ "@system-service" ];
  SystemCallErrorNumber = "EPERM";
}
