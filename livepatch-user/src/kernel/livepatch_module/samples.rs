//! The layout of the kernel's samples/livepatch and of hand-written patches:
//! a static `klp_patch` whose first field is `THIS_MODULE`. The walk starts
//! at that pointer (a relocation against `__this_module`), follows `objs`,
//! then each object's `funcs`.
//!
//! Only the leading fields, stable since 4.15, are read (64-bit):
//! `klp_patch { mod @0, objs @8, states @16, replace @24 }` (5.5+),
//! `klp_object { name @0, funcs @8, callbacks @16..48 }`,
//! `klp_func { old_name @0, new_func @8, old_sympos @16 }`.
//! The size of each struct depends on the kernel config (kobject debug
//! fields), so the array strides are measured: from the array symbol's size
//! divided by its entries plus the empty terminator, or else from the gap
//! between two entries of one array.
//!
//! The search for the `klp_patch` has a step budget, so that a hostile file
//! gets one error line, never a hang.
use std::{
    cell::{Cell, RefCell},
    collections::HashMap,
    rc::Rc,
};

use object::SectionIndex;

use super::{
    Failure, ModuleObject,
    callbacks::read_callbacks,
    elf::{Elf, POINTER, Place, Target, field, field_of},
};
use crate::model::{PatchFunction, Replace};

const FUNC_FIELDS: u64 = 24;
const OBJECT_FIELDS: u64 = 48;
const CALLBACKS_OFFSET: u64 = 16;
const REPLACE_OFFSET: u64 = 24;
/// A real module walks a few hundred klp_object and klp_func entries. A file
/// built so that thousands of candidate klp_patch structs each walk a long
/// array before failing would otherwise take time quadratic in its size.
const STEP_BUDGET: usize = 100_000;

/// Whether any data points at `__this_module`: the mark of this layout.
pub fn present(elf: &Elf) -> bool {
    elf.pointers
        .values()
        .any(|pointers| pointers.values().any(|&t| t == Target::ThisModule))
}

pub fn decode(elf: &Elf) -> Result<(Vec<ModuleObject>, Replace), Failure> {
    Search {
        elf,
        candidates: RefCell::default(),
        steps: Cell::new(0),
    }
    .patch()
}

struct Search<'e, 'a> {
    elf: &'e Elf<'a>,
    /// Where entries can start, by section and kind of entry.
    candidates: RefCell<HashMap<(SectionIndex, &'static str), Rc<Candidates>>>,
    /// Array entries walked so far by the klp_patch search.
    steps: Cell<usize>,
}

/// The places in one section where one kind of array entry can start.
struct Candidates {
    /// Sorted.
    offsets: Vec<u64>,
    /// For each index, the smallest gap between neighbouring offsets from
    /// there on.
    min_gap_from: Vec<Option<u64>>,
}

impl Candidates {
    fn new(offsets: Vec<u64>) -> Self {
        let mut min_gap_from: Vec<Option<u64>> = offsets
            .windows(2)
            .rev()
            .scan(None, |min: &mut Option<u64>, pair| {
                *min = (*min).into_iter().chain(pair[1].checked_sub(pair[0])).min();
                Some(*min)
            })
            .collect();
        min_gap_from.reverse();
        min_gap_from.push(None);
        Candidates {
            offsets,
            min_gap_from,
        }
    }
}

impl Search<'_, '_> {
    /// Counts `steps` of work against the budget.
    fn spend(&self, steps: usize) -> Result<(), Failure> {
        let total = self.steps.get().saturating_add(steps);
        self.steps.set(total);
        if total > STEP_BUDGET {
            return Err(self.exhausted());
        }
        Ok(())
    }

    fn exhausted(&self) -> Failure {
        Failure::Layout(format!(
            "gave up after walking {STEP_BUDGET} klp_object and klp_func entries: too many structures point at __this_module"
        ))
    }

    /// The klp_patch: a struct whose first field points at `__this_module`
    /// and whose second at a decodable array of klp_objects. Other structs
    /// (file_operations.owner, ...) also point at `__this_module`, at other
    /// offsets and without such an array, and are passed over.
    fn patch(&self) -> Result<(Vec<ModuleObject>, Replace), Failure> {
        let mut why_not = None;
        // In file order, so that a file with several candidates gets the
        // same answer on every run.
        let mut sections: Vec<_> = self.elf.pointers.iter().collect();
        sections.sort_by_key(|(section, _)| section.0);
        for (&section, pointers) in sections {
            for (&offset, &target) in pointers {
                if target != Target::ThisModule {
                    continue;
                }
                let patch = (section, offset);
                let Some(Target::Local(objs_section, objs_offset)) =
                    field(patch, POINTER).and_then(|objs| self.elf.pointer(objs))
                else {
                    continue;
                };
                match self.objects((objs_section, objs_offset)) {
                    Ok(objects) => {
                        let replace_at = field_of(patch, REPLACE_OFFSET, "klp_patch.replace")?;
                        let replace = self.elf.byte(replace_at)? != 0;
                        return Ok((objects, Replace::InFile(replace)));
                    }
                    Err(why) => {
                        if self.steps.get() > STEP_BUDGET {
                            return Err(self.exhausted());
                        }
                        why_not = Some(why);
                    }
                }
            }
        }
        Err(why_not.unwrap_or_else(|| {
            Failure::Layout(
                "no klp_patch found: no data points at __this_module followed by a klp_object array"
                    .into(),
            )
        }))
    }

    fn objects(&self, start: Place) -> Result<Vec<ModuleObject>, Failure> {
        let elf = self.elf;
        // An object's `funcs` points into data; its callbacks point at code.
        let entries = self.entries(start, OBJECT_FIELDS, "klp_object", |place| {
            field(place, POINTER).is_some_and(|funcs| elf.points_to_data(funcs))
        })?;
        entries
            .into_iter()
            .map(|entry| {
                let name = match elf.pointer(entry) {
                    None => None,
                    Some(_) => Some(elf.string(entry)?),
                };
                // entries() only yields objects whose funcs point into data.
                let functions = match field(entry, POINTER).and_then(|funcs| elf.pointer(funcs)) {
                    Some(Target::Local(section, _)) if elf.in_zeroed_data(section) => Vec::new(),
                    Some(Target::Local(section, offset)) => self.functions((section, offset))?,
                    _ => Vec::new(),
                };
                let callbacks = read_callbacks(
                    elf,
                    field_of(entry, CALLBACKS_OFFSET, "klp_object.callbacks")?,
                )?;
                Ok(ModuleObject {
                    name,
                    functions,
                    callbacks,
                })
            })
            .collect()
    }

    fn functions(&self, start: Place) -> Result<Vec<PatchFunction>, Failure> {
        let elf = self.elf;
        // old_name points at a string, new_func at code.
        let entries = self.entries(start, FUNC_FIELDS, "klp_func", |place| {
            matches!(elf.pointer(place), Some(Target::Local(..)))
                && !elf.points_to_text(place)
                && field(place, POINTER).is_some_and(|new_func| elf.points_to_text(new_func))
        })?;
        entries
            .into_iter()
            .map(|entry| {
                let sympos_at = field_of(entry, 2 * POINTER, "klp_func.old_sympos")?;
                Ok(PatchFunction {
                    sympos: elf.sympos(sympos_at, "klp_func.old_sympos")?,
                    name: elf.string(entry)?,
                })
            })
            .collect()
    }

    /// The entries of a zero-terminated array starting at `start`: the
    /// places where `is_entry` holds, one stride apart, up to the first gap.
    /// `is_entry` must be the same test for every call with that `what`.
    fn entries(
        &self,
        start: Place,
        min_size: u64,
        what: &'static str,
        is_entry: impl Fn(Place) -> bool,
    ) -> Result<Vec<Place>, Failure> {
        let (section, first) = start;
        let all = self.candidates(section, what, is_entry);
        let from = all.offsets.partition_point(|&c| c < first);
        let candidates = all.offsets.get(from..).unwrap_or_default();
        if candidates.first() != Some(&first) {
            return Err(Failure::Layout(format!(
                "no {what} at {:#x} where the pointer to it leads",
                first
            )));
        }
        let stride = match self.elf.sizes.get(&start) {
            // The entries within the symbol, plus the empty terminator.
            Some(&size) => first.checked_add(size).and_then(|end| {
                let count = u64::try_from(candidates.partition_point(|&c| c < end)).ok()?;
                let slots = count.checked_add(1)?;
                let stride = size / slots;
                (stride.checked_mul(slots)? == size).then_some(stride)
            }),
            // No symbol size (stripped): two entries of one array sit
            // exactly one stride apart; entries of different arrays sit at
            // least two apart (a terminator between them).
            None => all.min_gap_from.get(from).copied().flatten(),
        };
        let Some(stride) = stride.filter(|&s| s >= min_size && s % POINTER == 0) else {
            return Err(Failure::Layout(format!(
                "cannot size the {what} array at {first:#x}"
            )));
        };
        // At most one entry per candidate, each a stride (> 0) further.
        let mut entries = Vec::new();
        let mut next = Some(first);
        while let Some(at) = next.filter(|at| candidates.binary_search(at).is_ok()) {
            self.spend(1)?;
            entries.push((section, at));
            next = at.checked_add(stride);
        }
        Ok(entries)
    }

    /// Where a `what` can start in `section`: at a pointer or one pointer
    /// before it, where `is_entry` holds. Found once per section and kind,
    /// however many candidate klp_patch structs lead there.
    fn candidates(
        &self,
        section: SectionIndex,
        what: &'static str,
        is_entry: impl Fn(Place) -> bool,
    ) -> Rc<Candidates> {
        if let Some(found) = self.candidates.borrow().get(&(section, what)) {
            return Rc::clone(found);
        }
        let mut offsets: Vec<u64> = self
            .elf
            .pointers
            .get(&section)
            .into_iter()
            .flat_map(|pointers| pointers.keys())
            .flat_map(|&offset| [Some(offset), offset.checked_sub(POINTER)])
            .flatten()
            .filter(|&offset| is_entry((section, offset)))
            .collect();
        offsets.sort_unstable();
        offsets.dedup();
        let found = Rc::new(Candidates::new(offsets));
        self.candidates
            .borrow_mut()
            .insert((section, what), Rc::clone(&found));
        found
    }
}
