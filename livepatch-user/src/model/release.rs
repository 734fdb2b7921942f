/// A kernel's series, read from its release as `uname -r` gives it
/// ("6.12.117+deb12-amd64" is 6.12): what the few rules by release compare.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct KernelSeries {
    pub major: u32,
    pub minor: u32,
}

impl KernelSeries {
    pub const fn new(major: u32, minor: u32) -> Self {
        Self { major, minor }
    }

    /// None when the release does not start with `MAJOR.MINOR`.
    pub fn of(release: &str) -> Option<Self> {
        let mut numbers = release.trim().splitn(3, '.');
        let major = numbers.next()?.parse().ok()?;
        let minor: String = numbers
            .next()?
            .chars()
            .take_while(char::is_ascii_digit)
            .collect();
        Some(Self::new(major, minor.parse().ok()?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn series_of_distribution_releases() {
        assert_eq!(
            KernelSeries::of("6.12.117+deb12-amd64"),
            Some(KernelSeries::new(6, 12))
        );
        assert_eq!(
            KernelSeries::of("7.3.4+deb13-amd64\n"),
            Some(KernelSeries::new(7, 3))
        );
        assert_eq!(
            KernelSeries::of("5.10.0-46-amd64"),
            Some(KernelSeries::new(5, 10))
        );
        assert_eq!(KernelSeries::of("6.18-rc1"), Some(KernelSeries::new(6, 18)));
        assert_eq!(KernelSeries::of(""), None);
        assert_eq!(KernelSeries::of("garbage"), None);
        assert_eq!(KernelSeries::of("6"), None);
        assert!(KernelSeries::new(6, 1) < KernelSeries::new(6, 12));
    }
}
