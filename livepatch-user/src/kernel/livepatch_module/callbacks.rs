//! The callbacks of a `struct klp_callbacks`, as the samples and klp-build
//! layouts hold them.
use super::{
    Callback, Failure, Hook,
    elf::{self, Elf, Place, field_of},
};

/// The four callback pointers of a `struct klp_callbacks` at `at`, the set
/// ones named by their function.
pub(super) fn read_callbacks(elf: &Elf, at: Place) -> Result<Vec<Callback>, Failure> {
    let mut callbacks = Vec::new();
    for (slot, hook) in (0u64..).zip(Hook::ALL) {
        let place = field_of(at, slot * elf::POINTER, "a callback")?;
        if let Some(function) = elf.function(place, "a callback")? {
            callbacks.push(Callback { hook, function });
        }
    }
    Ok(callbacks)
}
