/* An ICU common-data library with no entries (what ICU's own "stubdata" library is).
 *
 * Qt in the PySide6 wheels links ICU, whose data library (libicudata, ~31 MB) holds
 * collation tables, legacy code pages and locale display names. The viewer uses none of
 * them: Qt does its own Unicode text layout, case mapping and time zones, and pydicom
 * decodes DICOM character sets in Python. With this stub, ICU calls fail softly and Qt
 * falls back (QCollator compares code points; legacy QStringDecoders are invalid).
 * installer/build.py compiles it with the versioned symbol name (icudtNN_dat) of the
 * library it replaces.
 */
#include <stdint.h>

typedef struct {
    uint16_t headerSize;
    uint8_t magic1, magic2;
    struct {
        uint16_t size, reservedWord;
        uint8_t isBigEndian, charsetFamily, sizeofUChar, reservedByte;
        uint8_t dataFormat[4], formatVersion[4], dataVersion[4];
    } info;
    char padding[8];
    uint32_t count, reserved;
    uint32_t toc[2];
} CommonData;

__attribute__((visibility("default"))) const CommonData ICU_DATA_SYMBOL = {
    32, 0xda, 0x27,
    {20, 0, 0, 0, 2, 0, {0x54, 0x6f, 0x43, 0x50} /* "ToCP" */, {1, 0, 0, 0}, {0, 0, 0, 0}},
    {0}, 0 /* no entries */, 0, {0, 0}};
