//! The layout of kpatch-build (dynup/kpatch 0.9, kmod/patch/kpatch-patch.h,
//! kpatch.lds.S and livepatch-patch-hook.c): no static `klp_patch`; the
//! hook builds it at init from
//!
//! `.kpatch.funcs`: `kpatch_patch_func { new_addr @0, new_size, old_addr,
//! old_size, sympos @32, name @40, objname @48 }`, 56 bytes, the section
//! whole (kpatch.lds.S bounds it with `__kpatch_funcs` and
//! `__kpatch_funcs_end`); names in `.kpatch.strings`, objname "vmlinux" for
//! the kernel;
//! `.kpatch.callbacks.{pre,post}_{patch,unpatch}`: `{ callback @0,
//! objname @8 }`, 16 bytes, each section padded with a zero quad.
//!
//! An object is made for every objname, in order of first appearance, as
//! the hook does. `replace` is set by the hook, on unless kpatch-build ran
//! with -R (which compiles it with KLP_REPLACE_ENABLE=false).
use super::{
    Callback, Failure, Hook, ModuleObject,
    elf::{Elf, POINTER, entry_of, field_of},
};
use crate::model::{PatchFunction, Replace};

pub const FUNCS_SECTION: &str = ".kpatch.funcs";
const FUNC_SIZE: u64 = 56;
const SYMPOS_OFFSET: u64 = 32;
const NAME_OFFSET: u64 = 40;
const OBJNAME_OFFSET: u64 = 48;
const CALLBACK_SIZE: u64 = 16;
pub const REPLACE_AT_LOAD: &str = "on unless built with -R";
use crate::model::VMLINUX;

pub fn decode(elf: &Elf) -> Result<(Vec<ModuleObject>, Replace), Failure> {
    let Some((section, size)) = elf.section(FUNCS_SECTION) else {
        return Err(Failure::Layout(format!("no {FUNCS_SECTION} section")));
    };
    if size % FUNC_SIZE != 0 {
        return Err(Failure::Layout(format!(
            "{FUNCS_SECTION} is {size} bytes, not a whole number of {FUNC_SIZE}-byte kpatch_patch_func"
        )));
    }
    let mut objects: Vec<ModuleObject> = Vec::new();
    for index in 0..size / FUNC_SIZE {
        let entry = entry_of((section, 0), index, FUNC_SIZE, "kpatch_patch_func")?;
        if !elf.points_to_text(entry) {
            return Err(Failure::Layout(format!(
                "kpatch_patch_func.new_addr at {:#x} does not point at code in this module",
                entry.1
            )));
        }
        let function = PatchFunction {
            name: elf.string(field_of(entry, NAME_OFFSET, "kpatch_patch_func.name")?)?,
            sympos: elf.sympos(
                field_of(entry, SYMPOS_OFFSET, "kpatch_patch_func.sympos")?,
                "kpatch_patch_func.sympos",
            )?,
        };
        let objname = elf.string(field_of(
            entry,
            OBJNAME_OFFSET,
            "kpatch_patch_func.objname",
        )?)?;
        object_named(&mut objects, objname).functions.push(function);
    }
    for hook in Hook::ALL {
        let name = format!(".kpatch.callbacks.{}", hook.name());
        let Some((section, size)) = elf.section(&name) else {
            continue;
        };
        // The linker script's zero quad ends each section: whole entries
        // only, and a slot without a function is that padding.
        for index in 0..size / CALLBACK_SIZE {
            let entry = entry_of((section, 0), index, CALLBACK_SIZE, "kpatch callback")?;
            let Some(function) = elf.function(entry, "kpatch callback")? else {
                continue;
            };
            let objname = elf.string(field_of(entry, POINTER, "kpatch callback objname")?)?;
            object_named(&mut objects, objname)
                .callbacks
                .push(Callback { hook, function });
        }
    }
    if objects.is_empty() {
        return Err(Failure::Layout(format!(
            "{FUNCS_SECTION} is empty and no callback is set: nothing to patch"
        )));
    }
    Ok((
        objects,
        Replace::SetAtLoad {
            default: REPLACE_AT_LOAD,
        },
    ))
}

fn object_named(objects: &mut Vec<ModuleObject>, objname: String) -> &mut ModuleObject {
    let name = (objname != VMLINUX).then_some(objname);
    let at = match objects.iter().position(|o| o.name == name) {
        Some(at) => at,
        None => {
            objects.push(ModuleObject {
                name,
                functions: Vec::new(),
                callbacks: Vec::new(),
            });
            objects.len() - 1
        }
    };
    &mut objects[at]
}
