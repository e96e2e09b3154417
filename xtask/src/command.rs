//! Running external programs with errors that name the command line.

use std::fmt;
use std::process::{Command, ExitStatus, Output, Stdio};

use anyhow::{Context, Result};

/// An external command that could not start or exited unsuccessfully.
#[derive(Debug)]
pub struct CommandFailed {
    /// The command line as a user could type it.
    pub command: String,
    /// The problem, for example "exited with status 100".
    pub problem: String,
}

impl fmt::Display for CommandFailed {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "command `{}` {}", self.command, self.problem)
    }
}

impl std::error::Error for CommandFailed {}

/// Formats `command` as a shell command line, including the environment
/// variables it sets and the directory it runs in.
pub fn describe(command: &Command) -> String {
    let mut words = Vec::new();
    if let Some(dir) = command.get_current_dir() {
        words.push(format!("cd {} &&", shell_quote(&dir.to_string_lossy())));
    }
    for (key, value) in command.get_envs() {
        if let Some(value) = value {
            words.push(format!(
                "{}={}",
                key.to_string_lossy(),
                shell_quote(&value.to_string_lossy())
            ));
        }
    }
    words.push(shell_quote(&command.get_program().to_string_lossy()));
    for arg in command.get_args() {
        words.push(shell_quote(&arg.to_string_lossy()));
    }
    words.join(" ")
}

/// Quotes `word` for a POSIX shell, leaving plain words as they are.
pub fn shell_quote(word: &str) -> String {
    let plain = !word.is_empty()
        && word
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./=:,+@%".contains(c));
    if plain {
        word.to_owned()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

fn status_problem(status: ExitStatus) -> String {
    match status.code() {
        Some(code) => format!("exited with status {code}"),
        None => format!("was killed ({status})"),
    }
}

fn start_failed(command: &Command, error: std::io::Error) -> CommandFailed {
    CommandFailed {
        command: describe(command),
        problem: format!("could not be started: {error}"),
    }
}

/// Runs `command` with inherited standard streams and fails unless it exits
/// with status 0.
pub fn run(command: &mut Command) -> Result<()> {
    let status = command
        .status()
        .map_err(|error| start_failed(command, error))?;
    if status.success() {
        Ok(())
    } else {
        Err(CommandFailed {
            command: describe(command),
            problem: status_problem(status),
        }
        .into())
    }
}

/// Runs `command`, captures its output, and returns it whatever the exit
/// status is. Fails only if the command cannot be started.
pub fn capture_any_status(command: &mut Command) -> Result<Output> {
    command
        .stdin(Stdio::null())
        .output()
        .map_err(|error| start_failed(command, error).into())
}

/// Runs `command` and returns its standard output as text. On a non-zero
/// exit status the error includes what the command wrote to stderr.
pub fn stdout_of(command: &mut Command) -> Result<String> {
    let bytes = stdout_bytes_of(command)?;
    String::from_utf8(bytes).with_context(|| format!("`{}` printed invalid UTF-8", describe(command)))
}

/// Runs `command` and returns its standard output as bytes; fails like
/// [`stdout_of`] when the command fails.
pub fn stdout_bytes_of(command: &mut Command) -> Result<Vec<u8>> {
    let output = capture_any_status(command)?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let mut problem = status_problem(output.status);
        if !stderr.trim().is_empty() {
            problem = format!("{problem}: {}", stderr.trim());
        }
        return Err(CommandFailed {
            command: describe(command),
            problem,
        }
        .into());
    }
    Ok(output.stdout)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shell_quote_leaves_plain_words() {
        assert_eq!(shell_quote("--features=llvm-22"), "--features=llvm-22");
    }

    #[test]
    fn shell_quote_quotes_spaces_and_quotes() {
        assert_eq!(shell_quote("exit 3"), "'exit 3'");
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
        assert_eq!(shell_quote(""), "''");
    }

    #[test]
    fn describe_includes_env_and_args() {
        let mut command = Command::new("cargo");
        command
            .env("PATH", "/usr/lib/llvm-22/bin:/usr/bin")
            .args(["install", "bpf-linker"]);
        assert_eq!(
            describe(&command),
            "PATH=/usr/lib/llvm-22/bin:/usr/bin cargo install bpf-linker"
        );
    }
}
