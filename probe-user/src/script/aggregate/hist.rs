//! Histogram buckets for `hist()` and `lhist()`: the bucket index that the
//! BPF program increments for a value, and the row labels user space prints.
//!
//! The codegen mirrors [`hist_bucket`] and [`lhist_bucket`] in BPF, so both
//! are defined with plain 64-bit integer steps: comparisons, a count of
//! leading zeros (a binary search of shifts in BPF), an unsigned division
//! and a clamp.

use thiserror::Error;

/// Number of `hist()` buckets, and so of `u64` counters in each CPU's slot.
///
/// | index        | values                       | text label            |
/// |--------------|------------------------------|-----------------------|
/// | 0            | `value < 0`                  | `(..., 0)`            |
/// | 1            | `value == 0`                 | `[0]`                 |
/// | 2            | `value == 1`                 | `[1]`                 |
/// | `i` in 3..=64 | `2^(i-2) <= value < 2^(i-1)` | `[2^(i-2), 2^(i-1))` |
///
/// Index 64 covers `2^62..=i64::MAX`. Values are signed: an unsigned value
/// of `2^63` or more is negative as an `i64` and lands in index 0, as in
/// bpftrace.
///
/// NOTE: bpftrace 0.17 stops its search at 2^31, so every value of 2^31
/// or more lands in `[2G, 4G)` there. Our top bucket is `[4E, 8E)`.
pub const HIST_BUCKETS: usize = 65;

/// Maximum number of `lhist()` rows between `min` and `max`, the limit that
/// bpftrace 0.17 enforces. The two overflow rows come on top.
pub const LHIST_MAX_BUCKETS: u64 = 1000;

/// Width of the `@` bar of a histogram's largest row.
pub(super) const BAR_WIDTH: usize = 52;

/// Returns the `hist()` bucket index of `value`; see [`HIST_BUCKETS`] for
/// the ranges.
pub fn hist_bucket(value: i64) -> usize {
    if value < 0 {
        return 0;
    }
    if value == 0 {
        return 1;
    }

    // floor(log2(value)) is 63 - leading_zeros for a positive value.
    let log2 = 63 - value.leading_zeros() as usize;
    2 + log2
}

/// Returns the `lhist(value, min, max, step)` row index of `value`:
///
/// | index                 | values                                          |
/// |-----------------------|-------------------------------------------------|
/// | 0                     | `value < min`                                   |
/// | `i` in 1..=`n`        | `min + (i-1)*step <= value < min + i*step`      |
/// | `n + 1`               | `value >= min + n*step`                         |
///
/// where `n = (max - min) / step` (integer division). The BPF form is:
/// `0` if `value < min` (signed compare), else
/// `min(1 + (value - min) / step, n + 1)` with a 64-bit wrapping
/// subtraction and an unsigned division.
///
/// When `step` does not divide `max - min`, values in
/// `[min + n*step, max)` land in the overflow row, which is labelled
/// `[max, ...)`. bpftrace 0.17 does the same: `lhist(9, 0, 10, 3)` prints
/// as `[10, ...)`.
///
/// The parameters must be valid for [`LhistParams::new`]; with others the
/// result is only guaranteed to be at most `n + 1`.
pub fn lhist_bucket(value: i64, min: i64, max: i64, step: i64) -> usize {
    if value < min {
        return 0;
    }

    let overflow_row = lhist_interior_rows(min, max, step) + 1;

    // value >= min, so the true difference fits in a u64 even when the
    // i64 subtraction would overflow.
    let offset = value.wrapping_sub(min) as u64;
    let row = 1 + offset / step.max(1) as u64;
    row.min(overflow_row) as usize
}

/// Number of rows between `min` and `max`, without the two overflow rows.
fn lhist_interior_rows(min: i64, max: i64, step: i64) -> u64 {
    let range = max.wrapping_sub(min) as u64;
    range / step.max(1) as u64
}

/// The validated parameters of `lhist(value, min, max, step)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LhistParams {
    min: i64,
    max: i64,
    step: i64,
}

/// Error in the parameters of `lhist()`.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum LhistError {
    #[error("lhist() step must be positive, got {step}")]
    StepNotPositive { step: i64 },
    #[error("lhist() min must be less than max, got min {min} and max {max}")]
    EmptyRange { min: i64, max: i64 },
    #[error("lhist() step {step} is larger than the range {min}..{max}")]
    StepTooLarge { min: i64, max: i64, step: i64 },
    #[error(
        "lhist() would need {buckets} buckets, at most {LHIST_MAX_BUCKETS} are allowed: \
         raise the step or narrow the range"
    )]
    TooManyBuckets { buckets: u64 },
}

impl LhistParams {
    /// Checks the parameters: `step > 0`, `min < max`, `step <= max - min`
    /// and at most [`LHIST_MAX_BUCKETS`] rows between `min` and `max`.
    ///
    /// A negative `min` is accepted here although bpftrace 0.17 rejects it.
    pub fn new(min: i64, max: i64, step: i64) -> Result<Self, LhistError> {
        if step <= 0 {
            return Err(LhistError::StepNotPositive { step });
        }
        if min >= max {
            return Err(LhistError::EmptyRange { min, max });
        }

        let range = max.wrapping_sub(min) as u64;
        if step as u64 > range {
            return Err(LhistError::StepTooLarge { min, max, step });
        }

        let buckets = range / step as u64;
        if buckets > LHIST_MAX_BUCKETS {
            return Err(LhistError::TooManyBuckets { buckets });
        }
        Ok(Self { min, max, step })
    }

    pub fn min(&self) -> i64 {
        self.min
    }

    pub fn max(&self) -> i64 {
        self.max
    }

    pub fn step(&self) -> i64 {
        self.step
    }

    /// Number of rows, and so of `u64` counters in each CPU's slot: the
    /// rows between `min` and `max` plus the `< min` and `>= max` rows.
    /// At most `LHIST_MAX_BUCKETS + 2`.
    pub fn rows(&self) -> usize {
        lhist_interior_rows(self.min, self.max, self.step) as usize + 2
    }

    /// Returns the row index of `value`, as [`lhist_bucket`] does.
    pub fn bucket(&self, value: i64) -> usize {
        lhist_bucket(value, self.min, self.max, self.step)
    }

    /// Lowest value of interior row `row` (1-based, as in [`lhist_bucket`]).
    pub(super) fn row_start(&self, row: usize) -> i64 {
        self.min
            .wrapping_add((row as i64 - 1).wrapping_mul(self.step))
    }
}

/// Formats `2^power` with the largest binary unit that divides it: `512`,
/// `1K`, `64M`, `4E`.
pub(super) fn power_of_two_label(power: u32) -> String {
    const UNITS: [(u32, &str); 6] = [
        (60, "E"),
        (50, "P"),
        (40, "T"),
        (30, "G"),
        (20, "M"),
        (10, "K"),
    ];

    for (unit_power, suffix) in UNITS {
        if power >= unit_power {
            return format!("{}{suffix}", 1u64 << (power - unit_power));
        }
    }
    (1u64 << power).to_string()
}

/// Formats an `lhist()` bound: with an `M` or `K` suffix when it is a
/// non-zero multiple of 2^20 or 2^10, in decimal otherwise. So `1024` is
/// `1K`, `1049600` is `1025K` and `1000` stays `1000`.
pub(super) fn lhist_bound_label(value: i64) -> String {
    const MEBI: i64 = 1 << 20;
    const KIBI: i64 = 1 << 10;

    if value != 0 && value % MEBI == 0 {
        format!("{}M", value / MEBI)
    } else if value != 0 && value % KIBI == 0 {
        format!("{}K", value / KIBI)
    } else {
        value.to_string()
    }
}

/// Text label of `hist()` bucket `index`, as in the table of [`HIST_BUCKETS`].
pub(super) fn hist_row_label(index: usize) -> String {
    match index {
        0 => "(..., 0)".to_string(),
        1 => "[0]".to_string(),
        2 => "[1]".to_string(),
        _ => {
            let power = index as u32 - 2;
            format!(
                "[{}, {})",
                power_of_two_label(power),
                power_of_two_label(power + 1)
            )
        }
    }
}

/// Text label of `lhist()` row `row`.
pub(super) fn lhist_row_label(params: &LhistParams, row: usize) -> String {
    if row == 0 {
        return format!("(..., {})", lhist_bound_label(params.min));
    }
    if row == params.rows() - 1 {
        return format!("[{}, ...)", lhist_bound_label(params.max));
    }

    let start = params.row_start(row);
    let end = start.wrapping_add(params.step);
    format!("[{}, {})", lhist_bound_label(start), lhist_bound_label(end))
}

/// Inclusive value range of `hist()` bucket `index` for JSON output:
/// `None` stands for an open end.
pub(super) fn hist_bucket_range(index: usize) -> (Option<i64>, Option<i64>) {
    match index {
        0 => (None, Some(-1)),
        1 => (Some(0), Some(0)),
        _ => {
            let power = index as u32 - 2;
            let low = 1i64 << power;
            let high = ((1u64 << (power + 1)) - 1) as i64;
            (Some(low), Some(high))
        }
    }
}

/// Inclusive value range of `lhist()` row `row` for JSON output: `None`
/// stands for an open end.
pub(super) fn lhist_row_range(params: &LhistParams, row: usize) -> (Option<i64>, Option<i64>) {
    if row == 0 {
        return (None, Some(params.min.wrapping_sub(1)));
    }
    if row == params.rows() - 1 {
        return (Some(params.max), None);
    }

    let start = params.row_start(row);
    (Some(start), Some(start.wrapping_add(params.step - 1)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hist_bucket_table() {
        let cases: [(i64, usize); 16] = [
            (i64::MIN, 0),
            (-1024, 0),
            (-1, 0),
            (0, 1),
            (1, 2),
            (2, 3),
            (3, 3),
            (4, 4),
            (7, 4),
            (8, 5),
            (1023, 11),
            (1024, 12),
            (1 << 31, 33),
            (1 << 32, 34),
            ((1 << 62) - 1, 63),
            (i64::MAX, 64),
        ];
        for (value, expected) in cases {
            assert_eq!(hist_bucket(value), expected, "hist_bucket({value})");
        }
    }

    #[test]
    fn hist_bucket_stays_in_range() {
        let largest = (0..63).map(|shift| hist_bucket(1i64 << shift)).max();
        assert_eq!(largest, Some(HIST_BUCKETS - 1));
        assert_eq!(hist_bucket(i64::MAX), HIST_BUCKETS - 1);
    }

    #[test]
    fn hist_bucket_matches_its_range() {
        for index in 0..HIST_BUCKETS {
            let (low, high) = hist_bucket_range(index);
            if let Some(low) = low {
                assert_eq!(hist_bucket(low), index, "low end of bucket {index}");
            }
            if let Some(high) = high {
                assert_eq!(hist_bucket(high), index, "high end of bucket {index}");
            }
        }
    }

    #[test]
    fn hist_row_labels() {
        let cases: [(usize, &str); 10] = [
            (0, "(..., 0)"),
            (1, "[0]"),
            (2, "[1]"),
            (3, "[2, 4)"),
            (11, "[512, 1K)"),
            (12, "[1K, 2K)"),
            (33, "[2G, 4G)"),
            (41, "[512G, 1T)"),
            (51, "[512T, 1P)"),
            (64, "[4E, 8E)"),
        ];
        for (index, expected) in cases {
            assert_eq!(hist_row_label(index), expected, "label of bucket {index}");
        }
    }

    #[test]
    fn lhist_bucket_table() {
        // lhist(value, 0, 100, 10): 10 interior rows, overflow row 11.
        let cases: [(i64, usize); 12] = [
            (i64::MIN, 0),
            (-1, 0),
            (0, 1),
            (1, 1),
            (9, 1),
            (10, 2),
            (99, 10),
            (100, 11),
            (101, 11),
            (1023, 11),
            (1024, 11),
            (i64::MAX, 11),
        ];
        for (value, expected) in cases {
            assert_eq!(
                lhist_bucket(value, 0, 100, 10),
                expected,
                "lhist_bucket({value}, 0, 100, 10)"
            );
        }
    }

    #[test]
    fn lhist_bucket_negative_min() {
        let cases: [(i64, usize); 7] = [
            (i64::MIN, 0),
            (-11, 0),
            (-10, 1),
            (-1, 2),
            (0, 3),
            (9, 4),
            (10, 5),
        ];
        for (value, expected) in cases {
            assert_eq!(
                lhist_bucket(value, -10, 10, 5),
                expected,
                "lhist_bucket({value}, -10, 10, 5)"
            );
        }
    }

    #[test]
    fn lhist_bucket_extreme_range() {
        // The range spans more than i64::MAX, so only unsigned arithmetic
        // gets the offset right.
        let (min, max, step) = (i64::MIN, i64::MAX, 1 << 62);
        assert_eq!(lhist_bucket(i64::MIN, min, max, step), 1);
        assert_eq!(lhist_bucket(-1, min, max, step), 2);
        assert_eq!(lhist_bucket(0, min, max, step), 3);
        assert_eq!(lhist_bucket(i64::MAX, min, max, step), 4);
        assert_eq!(LhistParams::new(min, max, step).map(|p| p.rows()), Ok(5));
    }

    #[test]
    fn lhist_bucket_uneven_step() {
        // lhist(value, 0, 10, 3): rows [0, 3), [3, 6), [6, 9), then [10, ...)
        // takes 9 as well, as in bpftrace 0.17.
        assert_eq!(lhist_bucket(8, 0, 10, 3), 3);
        assert_eq!(lhist_bucket(9, 0, 10, 3), 4);
        assert_eq!(lhist_bucket(10, 0, 10, 3), 4);
    }

    #[test]
    fn lhist_params_checks() {
        assert_eq!(
            LhistParams::new(0, 100, 0),
            Err(LhistError::StepNotPositive { step: 0 })
        );
        assert_eq!(
            LhistParams::new(0, 100, -5),
            Err(LhistError::StepNotPositive { step: -5 })
        );
        assert_eq!(
            LhistParams::new(100, 10, 20),
            Err(LhistError::EmptyRange { min: 100, max: 10 })
        );
        assert_eq!(
            LhistParams::new(5, 5, 1),
            Err(LhistError::EmptyRange { min: 5, max: 5 })
        );
        assert_eq!(
            LhistParams::new(10, 100, 200),
            Err(LhistError::StepTooLarge {
                min: 10,
                max: 100,
                step: 200
            })
        );
        assert_eq!(
            LhistParams::new(0, 100000, 10),
            Err(LhistError::TooManyBuckets { buckets: 10000 })
        );
        assert_eq!(LhistParams::new(0, 1000, 1).map(|p| p.rows()), Ok(1002));
        assert_eq!(LhistParams::new(0, 10, 3).map(|p| p.rows()), Ok(5));
    }

    #[test]
    fn lhist_row_labels() {
        let Ok(params) = LhistParams::new(1024, 4194304, 1048576) else {
            panic!("valid lhist parameters rejected");
        };
        let labels: Vec<String> = (0..params.rows())
            .map(|row| lhist_row_label(&params, row))
            .collect();
        assert_eq!(
            labels,
            [
                "(..., 1K)",
                "[1K, 1025K)",
                "[1025K, 2049K)",
                "[2049K, 3073K)",
                "[4M, ...)"
            ]
        );
    }

    #[test]
    fn lhist_bound_labels() {
        let cases: [(i64, &str); 7] = [
            (0, "0"),
            (1000, "1000"),
            (1024, "1K"),
            (5120, "5K"),
            (1 << 20, "1M"),
            (-2048, "-2K"),
            (-7, "-7"),
        ];
        for (value, expected) in cases {
            assert_eq!(lhist_bound_label(value), expected, "label of {value}");
        }
    }

    #[test]
    fn lhist_json_ranges() {
        let Ok(params) = LhistParams::new(0, 100, 10) else {
            panic!("valid lhist parameters rejected");
        };
        assert_eq!(lhist_row_range(&params, 0), (None, Some(-1)));
        assert_eq!(lhist_row_range(&params, 1), (Some(0), Some(9)));
        assert_eq!(lhist_row_range(&params, 10), (Some(90), Some(99)));
        assert_eq!(lhist_row_range(&params, 11), (Some(100), None));
    }
}
