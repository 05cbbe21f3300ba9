import streamlit as st

st.title('augmentations')
st.info('Not built yet.')
