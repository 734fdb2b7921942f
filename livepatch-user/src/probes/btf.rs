//! Just enough of a BTF reader to find `struct task_struct`'s field offsets.
//!
//! Rust eBPF cannot emit CO-RE relocations, so the programs read task fields
//! at offsets that user space computes from the running kernel's BTF.
use std::{collections::HashMap, path::Path};

use livepatch_ebpf::{TaskIterOffsets, TaskOffsets};
use thiserror::Error;

use crate::kernel::attr::read_capped;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum BtfError {
    #[error("not BTF data (bad magic or header)")]
    BadHeader,
    #[error("BTF data is truncated")]
    Truncated,
    #[error("unknown BTF kind {0}")]
    UnknownKind(u32),
    #[error("struct {0} is not in the kernel's BTF")]
    NoStruct(&'static str),
    #[error("struct task_struct has no field `{0}` in the kernel's BTF")]
    NoField(&'static str),
}

const BTF_MAGIC: u16 = 0xeb9f;
const KIND_STRUCT: u32 = 4;
const KIND_UNION: u32 = 5;
/// vmlinux's BTF is 5 to 6 MB on distribution kernels.
const BTF_MAX: u64 = 256 << 20;

/// task_struct offsets, except `patch_state`, which exists only with
/// CONFIG_LIVEPATCH.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TaskLayout {
    pub offsets: TaskOffsets,
    pub has_patch_state: bool,
}

struct Member {
    name_off: u32,
    type_id: u32,
    bit_offset: u32,
}

struct Composite {
    name_off: u32,
    members: Vec<Member>,
}

struct Types<'a> {
    strings: &'a [u8],
    /// Indexed by type id; only structs and unions are kept.
    composites: HashMap<u32, Composite>,
}

fn u32_at(data: &[u8], at: usize) -> Result<u32, BtfError> {
    data.get(at..at + 4)
        .map(|b| u32::from_le_bytes(b.try_into().unwrap()))
        .ok_or(BtfError::Truncated)
}

impl<'a> Types<'a> {
    fn parse(data: &'a [u8]) -> Result<Self, BtfError> {
        let magic = data
            .get(0..2)
            .map(|b| u16::from_le_bytes([b[0], b[1]]))
            .ok_or(BtfError::BadHeader)?;
        if magic != BTF_MAGIC {
            return Err(BtfError::BadHeader);
        }
        let hdr_len = u32_at(data, 4)? as usize;
        let type_off = u32_at(data, 8)? as usize;
        let type_len = u32_at(data, 12)? as usize;
        let str_off = u32_at(data, 16)? as usize;
        let str_len = u32_at(data, 20)? as usize;
        let types = data
            .get(hdr_len + type_off..hdr_len + type_off + type_len)
            .ok_or(BtfError::Truncated)?;
        let strings = data
            .get(hdr_len + str_off..hdr_len + str_off + str_len)
            .ok_or(BtfError::Truncated)?;

        let mut composites = HashMap::new();
        let mut at = 0;
        let mut id = 1;
        while at < types.len() {
            let name_off = u32_at(types, at)?;
            let info = u32_at(types, at + 4)?;
            let kind = (info >> 24) & 0x1f;
            let vlen = (info & 0xffff) as usize;
            let kflag = info >> 31 == 1;
            at += 12;
            let extra = match kind {
                1 | 14 | 17 => 4,             // int, var, decl_tag
                3 => 12,                      // array
                4 | 5 | 15 | 19 => vlen * 12, // struct, union, datasec, enum64
                6 | 13 => vlen * 8,           // enum, func_proto
                2 | 7..=12 | 16 | 18 => 0, // ptr, fwd, typedef, qualifiers, func, float, type_tag
                other => return Err(BtfError::UnknownKind(other)),
            };
            if kind == KIND_STRUCT || kind == KIND_UNION {
                let members = (0..vlen)
                    .map(|i| {
                        let m = at + i * 12;
                        let offset = u32_at(types, m + 8)?;
                        Ok(Member {
                            name_off: u32_at(types, m)?,
                            type_id: u32_at(types, m + 4)?,
                            bit_offset: if kflag { offset & 0x00ff_ffff } else { offset },
                        })
                    })
                    .collect::<Result<_, BtfError>>()?;
                composites.insert(id, Composite { name_off, members });
            }
            at += extra;
            id += 1;
        }
        Ok(Self {
            strings,
            composites,
        })
    }

    fn name(&self, off: u32) -> &[u8] {
        let rest = self.strings.get(off as usize..).unwrap_or_default();
        &rest[..rest.iter().position(|&b| b == 0).unwrap_or(rest.len())]
    }

    fn struct_named(&self, name: &str) -> Option<&Composite> {
        self.composites
            .values()
            .find(|c| self.name(c.name_off) == name.as_bytes())
    }

    /// A field's byte offset, looking through anonymous structs and unions
    /// (randomized layouts and unions wrap fields in them).
    fn field_offset(&self, composite: &Composite, field: &str) -> Option<u32> {
        for member in &composite.members {
            let name = self.name(member.name_off);
            if name == field.as_bytes() {
                return Some(member.bit_offset / 8);
            }
            if name.is_empty() {
                let inner = self.composites.get(&member.type_id)?;
                if let Some(offset) = self.field_offset(inner, field) {
                    return Some(member.bit_offset / 8 + offset);
                }
            }
        }
        None
    }
}

fn task_struct<'t>(types: &'t Types) -> Result<&'t Composite, BtfError> {
    types
        .struct_named("task_struct")
        .ok_or(BtfError::NoStruct("task_struct"))
}

fn field(types: &Types, task: &Composite, name: &'static str) -> Result<u32, BtfError> {
    types
        .field_offset(task, name)
        .ok_or(BtfError::NoField(name))
}

/// The fields every program reads; patch_state only on a livepatch kernel.
fn task_offsets(types: &Types, task: &Composite) -> Result<TaskLayout, BtfError> {
    let patch_state = types.field_offset(task, "patch_state");
    Ok(TaskLayout {
        offsets: TaskOffsets {
            pid: field(types, task, "pid")?,
            tgid: field(types, task, "tgid")?,
            comm: field(types, task, "comm")?,
            flags: field(types, task, "flags")?,
            patch_state: patch_state.unwrap_or(0),
        },
        has_patch_state: patch_state.is_some(),
    })
}

/// Reads task_struct's layout from raw BTF (e.g. /sys/kernel/btf/vmlinux).
pub fn task_layout(btf: &[u8]) -> Result<TaskLayout, BtfError> {
    let types = Types::parse(btf)?;
    task_offsets(&types, task_struct(&types)?)
}

/// task_struct's offsets for the task iterator: those of `task_layout`,
/// the scheduler state (`__state` from 5.14 on, `state` before) and
/// `exit_state`.
pub fn task_iter_offsets(btf: &[u8]) -> Result<TaskIterOffsets, BtfError> {
    let types = Types::parse(btf)?;
    let task = task_struct(&types)?;
    iter_offsets(&types, task, task_offsets(&types, task)?)
}

/// The running kernel's BTF, read and parsed once for all of a load's
/// programs: aya's parse (fentry, fexit and iterator programs attach by
/// the kernel's type ids) and task_struct's offsets (the programs read
/// task fields at them).
pub(super) struct KernelBtf {
    pub btf: aya::Btf,
    pub layout: TaskLayout,
    /// The task iterator's offsets, or why it cannot have them.
    pub iter_offsets: Result<TaskIterOffsets, String>,
}

impl KernelBtf {
    /// Reads `<root>/sys/kernel/btf/vmlinux`. Err is why not, in one line.
    pub fn read(root: &Path) -> Result<Self, String> {
        let path = root.join("sys/kernel/btf/vmlinux");
        let raw = read_capped(&path, BTF_MAX).map_err(|e| {
            format!(
                "no kernel BTF at {} ({e}): the kernel needs CONFIG_DEBUG_INFO_BTF",
                path.display()
            )
        })?;
        let in_file = |e: BtfError| format!("{}: {e}", path.display());
        let (layout, iter_offsets) = {
            let types = Types::parse(&raw).map_err(in_file)?;
            let task = task_struct(&types).map_err(in_file)?;
            let layout = task_offsets(&types, task).map_err(in_file)?;
            let iter_offsets = iter_offsets(&types, task, layout)
                .map_err(in_file)
                .and_then(pid_then_tgid);
            (layout, iter_offsets)
        };
        let btf = aya::Btf::parse(&raw, aya::Endianness::default())
            .map_err(|e| format!("cannot parse the kernel's BTF: {e}"))?;
        Ok(KernelBtf {
            btf,
            layout,
            iter_offsets,
        })
    }
}

/// The iterator reads pid and tgid in one read.
fn pid_then_tgid(offsets: TaskIterOffsets) -> Result<TaskIterOffsets, String> {
    if offsets.tgid != offsets.pid + 4 {
        return Err(format!(
            "task_struct's tgid (at {}) does not follow its pid (at {}) in this kernel's BTF",
            offsets.tgid, offsets.pid
        ));
    }
    Ok(offsets)
}

fn iter_offsets(
    types: &Types,
    task: &Composite,
    layout: TaskLayout,
) -> Result<TaskIterOffsets, BtfError> {
    let TaskLayout {
        offsets,
        has_patch_state,
    } = layout;
    Ok(TaskIterOffsets {
        pid: offsets.pid,
        tgid: offsets.tgid,
        comm: offsets.comm,
        flags: offsets.flags,
        state: field(types, task, "__state").or_else(|_| field(types, task, "state"))?,
        exit_state: field(types, task, "exit_state")?,
        patch_state: offsets.patch_state,
        has_patch_state: u32::from(has_patch_state),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_what_is_not_btf() {
        assert_eq!(task_layout(b"").unwrap_err(), BtfError::BadHeader);
        assert_eq!(
            task_layout(b"\x9f\xeb\x01\x00").unwrap_err(),
            BtfError::Truncated
        );
        assert_eq!(task_layout(&[0u8; 64]).unwrap_err(), BtfError::BadHeader);
    }
}
