//! The layout of the kernel's own klp-build (Linux 6.19+,
//! scripts/livepatch/init.c and objtool's `klp diff`): no static
//! `klp_patch`; init code builds it from two sections of compact structs
//! (include/linux/livepatch_external.h), with no terminators:
//!
//! `klp_object_ext { name @0 (NULL: vmlinux), funcs @8, callbacks @16..56,
//! nr_funcs @56 (u32) }`, 64 bytes, in `.init.klp_objects` (7.2+) or
//! `__klp_objects` (6.19 to 7.1);
//! `klp_func_ext { old_name @0, new_func @8, sympos @16 }`, 24 bytes, in
//! `.init.klp_funcs` or `__klp_funcs`.
//!
//! `replace` is set by the init code, on unless klp-build ran with
//! `--no-replace` (which compiles it with KLP_NO_REPLACE): the file holds
//! no value to read.
use super::{
    Failure, ModuleObject,
    callbacks::read_callbacks,
    elf::{Elf, POINTER, entry_of, field_of},
};
use crate::model::{PatchFunction, Replace};

/// The objects' section names, newest first.
const OBJECT_SECTIONS: [&str; 2] = [".init.klp_objects", "__klp_objects"];
const OBJECT_SIZE: u64 = 64;
const FUNC_SIZE: u64 = 24;
const CALLBACKS_OFFSET: u64 = 16;
const NR_FUNCS_OFFSET: u64 = 56;
pub const REPLACE_AT_LOAD: &str = "on unless built with --no-replace";

/// The section of klp_object_ext structs, if the module has one.
pub fn objects_section(elf: &Elf) -> Option<(&'static str, object::SectionIndex, u64)> {
    OBJECT_SECTIONS.iter().find_map(|&name| {
        let (index, size) = elf.section(name)?;
        Some((name, index, size))
    })
}

pub fn decode(
    elf: &Elf,
    (section_name, section, size): (&str, object::SectionIndex, u64),
) -> Result<(Vec<ModuleObject>, Replace), Failure> {
    if size % OBJECT_SIZE != 0 {
        return Err(Failure::Layout(format!(
            "{section_name} is {size} bytes, not a whole number of {OBJECT_SIZE}-byte klp_object_ext"
        )));
    }
    let objects = (0..size / OBJECT_SIZE)
        .map(|index| {
            let entry = entry_of((section, 0), index, OBJECT_SIZE, "klp_object_ext")?;
            object(elf, entry)
        })
        .collect::<Result<Vec<_>, _>>()?;
    if objects.is_empty() {
        // The init code refuses it too ("nothing to patch!").
        return Err(Failure::Layout(format!("{section_name} is empty")));
    }
    Ok((
        objects,
        Replace::SetAtLoad {
            default: REPLACE_AT_LOAD,
        },
    ))
}

fn object(elf: &Elf, entry: (object::SectionIndex, u64)) -> Result<ModuleObject, Failure> {
    let name = elf.optional_string(entry)?;
    let nr_funcs = elf.u32_at(field_of(entry, NR_FUNCS_OFFSET, "klp_object_ext.nr_funcs")?)?;
    let funcs_at = field_of(entry, POINTER, "klp_object_ext.funcs")?;
    let functions = match (elf.pointer(funcs_at), nr_funcs) {
        (_, 0) => Vec::new(),
        (Some(super::elf::Target::Local(section, offset)), _) => (0..u64::from(nr_funcs))
            .map(|index| {
                let func = entry_of((section, offset), index, FUNC_SIZE, "klp_func_ext")?;
                function(elf, func)
            })
            .collect::<Result<_, _>>()?,
        _ => {
            return Err(Failure::Layout(format!(
                "klp_object_ext at {:#x} has {nr_funcs} functions but its funcs points nowhere in the module",
                entry.1
            )));
        }
    };
    Ok(ModuleObject {
        name,
        functions,
        callbacks: read_callbacks(
            elf,
            field_of(entry, CALLBACKS_OFFSET, "klp_object_ext.callbacks")?,
        )?,
    })
}

fn function(elf: &Elf, entry: (object::SectionIndex, u64)) -> Result<PatchFunction, Failure> {
    let new_func = field_of(entry, POINTER, "klp_func_ext.new_func")?;
    if !elf.points_to_text(new_func) {
        return Err(Failure::Layout(format!(
            "klp_func_ext.new_func at {:#x} does not point at code in this module",
            new_func.1
        )));
    }
    Ok(PatchFunction {
        name: elf.string(entry)?,
        sympos: elf.sympos(
            field_of(entry, 2 * POINTER, "klp_func_ext.sympos")?,
            "klp_func_ext.sympos",
        )?,
    })
}
