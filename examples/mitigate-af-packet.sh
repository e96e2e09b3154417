#!/bin/sh
# Denies packet sockets (AF_PACKET) until a fixed kernel is installed.
#
# Attack surface removed: the packet socket code (net/packet), reachable by
# any process with CAP_NET_RAW, including root in an unprivileged user
# namespace. Several local privilege escalations lived there, such as
# CVE-2016-8655 and CVE-2020-14386. Few programs need raw packet sockets:
# DHCP clients do, so dhclient is excepted; tcpdump and arping stop working
# while the mitigation is applied.
#
# TTL sets how long it stays (default 7 days); past it, the kernel allows
# packet sockets again even if nothing removes the mitigation.
set -e
probe mitigate deny-socket --family packet --except-comm dhclient --ttl "${TTL:-7d}"
