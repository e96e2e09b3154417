#!/bin/sh
# Denies creating user namespaces to every user but root.
#
# Attack surface removed: an unprivileged user who creates a user namespace
# becomes root inside it and reaches kernel code that otherwise needs
# CAP_SYS_ADMIN or CAP_NET_ADMIN (netfilter, mount, network device
# configuration). Many local privilege escalations start that way, such as
# CVE-2022-0185 (fsconfig) and CVE-2023-32233 (nf_tables). Rootless
# containers and browser sandboxes that use user namespaces stop working
# for non-root users while it is applied.
set -e
probe mitigate deny-userns --ttl "${TTL:-7d}"
