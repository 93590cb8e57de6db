//! Memory pressure, priority-aware: the higher memory use climbs between
//! the warning and the critical mark, the more priorities are shed. LOW
//! goes first (at the warning mark), NORMAL from halfway, HIGH at the
//! critical mark; CRITICAL never. Each level clears only once use falls
//! `HYSTERESIS` below the mark that raised it, so a process hovering at a
//! mark does not flap.

use tower_hardening_core::Priority;

/// How far below its mark (as a fraction of the limit) use must fall for
/// a shedding level to clear.
pub(crate) const HYSTERESIS: f64 = 0.05;

/// How much is shed now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub(crate) enum Shedding {
    #[default]
    None,
    /// LOW is refused.
    Low,
    /// LOW and NORMAL are refused.
    Normal,
    /// Everything but CRITICAL is refused.
    High,
}

impl Shedding {
    pub(crate) fn from_u8(level: u8) -> Self {
        match level {
            0 => Shedding::None,
            1 => Shedding::Low,
            2 => Shedding::Normal,
            _ => Shedding::High,
        }
    }

    /// Requests below this priority are refused.
    pub(crate) fn below(self) -> Option<Priority> {
        match self {
            Shedding::None => None,
            Shedding::Low => Some(Priority::NORMAL),
            Shedding::Normal => Some(Priority::HIGH),
            Shedding::High => Some(Priority::CRITICAL),
        }
    }
}

/// The marks, as fractions of the memory limit.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Marks {
    pub(crate) warning: f64,
    pub(crate) critical: f64,
}

impl Marks {
    fn mark(&self, level: Shedding) -> f64 {
        match level {
            Shedding::None => 0.0,
            Shedding::Low => self.warning,
            Shedding::Normal => (self.warning + self.critical) / 2.0,
            Shedding::High => self.critical,
        }
    }

    /// The level for memory use `used` (fraction of the limit), given the
    /// current level: raised at once, lowered with hysteresis.
    pub(crate) fn next(&self, current: Shedding, used: f64) -> Shedding {
        let levels = [Shedding::High, Shedding::Normal, Shedding::Low];
        let raised = levels
            .into_iter()
            .find(|&level| used >= self.mark(level))
            .unwrap_or(Shedding::None);
        if raised >= current {
            return raised;
        }
        // Falling: keep each level until use is clearly below its mark.
        let mut level = current;
        while level > raised && used < self.mark(level) - HYSTERESIS {
            level = match level {
                Shedding::High => Shedding::Normal,
                Shedding::Normal => Shedding::Low,
                _ => Shedding::None,
            };
        }
        level
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MARKS: Marks = Marks {
        warning: 0.80,
        critical: 0.95,
    };

    #[test]
    fn rises_at_once_and_falls_with_hysteresis() {
        let mut level = Shedding::None;
        let mut seen = Vec::new();
        for used in [0.5, 0.81, 0.88, 0.96, 0.93, 0.89, 0.85, 0.82, 0.79, 0.74] {
            level = MARKS.next(level, used);
            seen.push(level);
        }
        use Shedding::*;
        assert_eq!(
            seen,
            [
                None, Low, Normal, High, High, Normal, Normal, Low, Low, None
            ]
        );
        assert_eq!(High.below(), Some(Priority::CRITICAL));
    }
}
