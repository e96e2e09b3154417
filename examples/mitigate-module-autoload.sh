#!/bin/sh
# Denies module autoloading: the kernel no longer loads a module because a
# process asked for a protocol, file system or device it does not have.
#
# Attack surface removed: an unprivileged socket() of a rare protocol family
# (DCCP, TIPC, RDS, ...) makes the kernel load that protocol's module,
# bringing in code that nobody on the machine uses, such as the DCCP module
# of CVE-2017-6074. Modules already loaded keep working, and root can still
# load modules explicitly with modprobe.
set -e
probe mitigate deny-module-autoload --ttl "${TTL:-7d}"
