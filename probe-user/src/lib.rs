//! The user-space side of the probe tool: kernel facts, BTF and symbol
//! lookups, the default tracer's loader, and the command-line front ends.

pub mod btf;
pub mod cli;
pub mod fault;
pub mod interrupt;
pub mod format;
pub mod kallsyms;
pub mod kernel;
pub mod kprobe_link;
pub mod mapio;
pub mod mitigate;
pub mod planner;
pub mod runtime;
pub mod script;
pub mod session;
pub mod suggest;
pub mod symbolize;
pub mod tracer;
pub mod tracepoint;
pub mod uprobe;
