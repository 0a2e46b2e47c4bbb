; Inno Setup script for the medexport viewer on Windows (per-user install, no admin rights).
; Build on Windows: make the frozen folder with the shared spec, then compile this script:
;   py -m venv .venv-installer && .venv-installer\Scripts\pip install ".[desktop]" pyinstaller==6.22.3
;   .venv-installer\Scripts\python installer\build.py --bundles bundles --dist dist
;   iscc installer\windows\medexport-viewer.iss
; Not built in CI (no Windows machine there); same structure as the Linux recipe.

#define AppName "medexport viewer"
#define AppVersion "0.1.0"

[Setup]
AppId={{6A4F1C2E-8B7D-4E55-9B0F-3D2C1A7E9F10}
AppName={#AppName}
AppVersion={#AppVersion}
AppPublisher=medexport
DefaultDirName={localappdata}\Programs\medexport-viewer
DefaultGroupName={#AppName}
PrivilegesRequired=lowest
OutputDir=..\..\dist
OutputBaseFilename=medexport-viewer-setup-{#AppVersion}
Compression=lzma2
SolidCompression=yes
SetupIconFile=..\build\icon.ico
ArchitecturesInstallIn64BitMode=x64compatible

[Files]
Source: "..\..\dist\medexport-viewer\*"; DestDir: "{app}"; Flags: recursesubdirs ignoreversion

[Icons]
Name: "{group}\{#AppName}"; Filename: "{app}\medexport-viewer.exe"
Name: "{userdesktop}\{#AppName}"; Filename: "{app}\medexport-viewer.exe"; Tasks: desktopicon

[Tasks]
Name: "desktopicon"; Description: "Create a desktop shortcut"; Flags: unchecked

[Run]
; prove the install works before the user relies on it
Filename: "{app}\medexport-viewer.exe"; Parameters: "--selftest"; Flags: runhidden waituntilterminated; StatusMsg: "Checking the installed models..."
Filename: "{app}\medexport-viewer.exe"; Description: "Start {#AppName}"; Flags: nowait postinstall skipifsilent
