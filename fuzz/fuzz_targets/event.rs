// The event the targets validate payloads as: a u128 (16-byte alignment), a string (UTF-8), a
// vector and an option, so that rkyv's validation has something to refuse.
#[derive(rkyv::Archive, rkyv::Serialize, varvedb::Event)]
pub struct Fz {
    pub id: u128,
    pub name: String,
    pub values: Vec<u32>,
    pub note: Option<String>,
}
