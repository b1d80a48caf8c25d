/** Small DOM helpers shared by the tab's views. Strings always become text nodes, never HTML. */

/** Creates an element with properties and children (strings become text nodes). */
export function el(tag, props = {}, children = []) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (key === "dataset") Object.assign(node.dataset, value);
    else node[key] = value;
  }
  for (const child of children) node.append(child);
  return node;
}

export function labelled(text, control, title) {
  return el("label", { className: "control", title }, [el("span", { textContent: text }), control]);
}

/** Replaces a select's options ([value, text] pairs), keeping `keep` selected when it is still there. */
export function setOptions(select, values, keep) {
  const same =
    select.options.length === values.length &&
    values.every(([value, text], i) => select.options[i].value === value && select.options[i].textContent === text);
  if (!same) select.replaceChildren(...values.map(([value, text]) => el("option", { value, textContent: text })));
  if (values.some(([value]) => value === keep)) select.value = keep;
  select.disabled = values.length === 0;
}
