//! What the running kernel lets klpscope do with eBPF, each missing piece
//! with its reason, so that callers can decide how to do without.
use serde::Serialize;

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Capability {
    pub name: String,
    pub available: bool,
    /// Why not, when not available.
    pub reason: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Capabilities {
    pub items: Vec<Capability>,
}

/// The pieces without which no eBPF program runs at all.
const ESSENTIAL: [&str; 4] = ["root", "btf", "ebpf_object", "fentry"];

impl Capabilities {
    pub fn available(&mut self, name: impl Into<String>) {
        self.items.push(Capability {
            name: name.into(),
            available: true,
            reason: None,
        });
    }

    pub fn missing(&mut self, name: impl Into<String>, reason: impl Into<String>) {
        self.items.push(Capability {
            name: name.into(),
            available: false,
            reason: Some(reason.into()),
        });
    }

    pub fn get(&self, name: &str) -> Option<&Capability> {
        self.items.iter().find(|c| c.name == name)
    }

    /// True when the essentials are there: programs can load and attach.
    pub fn ebpf_available(&self) -> bool {
        ESSENTIAL
            .iter()
            .all(|name| self.get(name).is_some_and(|c| c.available))
    }

    /// One line saying why eBPF cannot be used, if it cannot.
    pub fn unavailable_reason(&self) -> Option<String> {
        ESSENTIAL.iter().find_map(|name| match self.get(name) {
            Some(c) if c.available => None,
            Some(c) => c.reason.clone(),
            None => Some(format!("{name} was not checked")),
        })
    }

    /// The optional pieces that are missing, e.g. tracer hooks this kernel
    /// does not have.
    pub fn missing_optional(&self) -> impl Iterator<Item = &Capability> {
        self.items
            .iter()
            .filter(|c| !c.available && !ESSENTIAL.contains(&c.name.as_str()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_missing_essential_explains_why() {
        let mut caps = Capabilities::default();
        caps.available("root");
        caps.available("btf");
        caps.available("ebpf_object");
        caps.missing("fentry", "fentry refused by the kernel");
        caps.missing("hook:klp_cancel_transition", "not in BTF");
        assert!(!caps.ebpf_available());
        assert_eq!(
            caps.unavailable_reason().as_deref(),
            Some("fentry refused by the kernel")
        );
        assert_eq!(caps.missing_optional().count(), 1);
    }

    #[test]
    fn unchecked_essentials_count_as_missing() {
        let mut caps = Capabilities::default();
        caps.available("root");
        assert!(!caps.ebpf_available());
        assert_eq!(
            caps.unavailable_reason().as_deref(),
            Some("btf was not checked")
        );
    }
}
